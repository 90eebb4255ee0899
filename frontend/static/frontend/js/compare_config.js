// What the compared runs were configured with, as sections of flat fields (no DOM): the
// differences the config table shows, and the groups runs fall into (by a tag, by pipeline,
// or by the value of a differing field). A planned run's sections come from its plan, its
// stages aligned by stage index ("stage 1" of every run side by side, whatever their names);
// a free-form run (no plan) has its logged config: each top-level object a section of its
// own, its other fields under "config", and the stages it declared.

const SECTION_ORDER = ["run", "model", "data", "eval sets", "config"];

function flatten(value, prefix, out) {
  if (value && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    if (!entries.length && prefix) out[prefix] = JSON.stringify(value);
    for (const [k, v] of entries) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) out[prefix] = JSON.stringify(value);
  return out;
}

// Eval sets are matched by name, not by position.
function byName(list) {
  const out = {};
  (list || []).forEach((e, i) => { out[e && e.name ? e.name : String(i)] = e; });
  return out;
}

function planSections(plan) {
  const { model, stages, eval_sets: evalSets, ...rest } = plan;
  const sections = { run: flatten(rest, "", {}), model: flatten(model || {}, "", {}), "eval sets": flatten(byName(evalSets), "", {}) };
  (stages || []).forEach((st, i) => { sections[`stage ${i}`] = flatten(st, "", {}); });
  return sections;
}

function freeFormSections(detail) {
  const sections = { config: {} };
  for (const [k, v] of Object.entries(detail.config || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) sections[k] = flatten(v, "", {});
    else flatten(v, k, sections.config);
  }
  (detail.stages || []).forEach((st) => {
    sections[`stage ${st.stage_index}`] = flatten({ name: st.name, steps: st.end_step - st.start_step }, "", {});
  });
  return sections;
}

// section -> {field -> JSON text}
export function configSections(detail) {
  return detail.plan ? planSections(detail.plan) : freeFormSections(detail);
}

function sectionRank(name) {
  const m = /^stage (\d+)$/.exec(name);
  if (m) return [SECTION_ORDER.length, Number(m[1])];
  const i = SECTION_ORDER.indexOf(name);
  return [i < 0 ? SECTION_ORDER.length + 1 : i, name];
}

const bySection = (a, b) => {
  const [ra, rb] = [sectionRank(a), sectionRank(b)];
  return ra[0] - rb[0] || (typeof ra[1] === "number" ? ra[1] - rb[1] : String(ra[1]).localeCompare(String(rb[1])));
};

// [{section, fields: [{field, values: [text or null per run]}], total}], only the fields
// whose values are not all equal (a field a run lacks counts as differing), sections in a
// fixed order (run, model, data, eval sets, config, stage 0, stage 1, ..., the others).
export function configDiff(runs) {
  const per = runs.map((c) => configSections(c.detail));
  const names = [...new Set(per.flatMap((s) => Object.keys(s)))].sort(bySection);
  return names.map((section) => {
    const fields = [...new Set(per.flatMap((s) => Object.keys(s[section] || {})))]
      .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const rows = fields.map((field) => ({ field, values: per.map((s) => (s[section] || {})[field] ?? null) }))
      .filter((r) => new Set(r.values.map(String)).size > 1);
    return { section, fields: rows, total: fields.length };
  }).filter((s) => s.fields.length);
}

// The "section · field" names of the differing fields, for the group-by-parameter choice.
export function differingParams(diff) {
  return diff.flatMap((s) => s.fields.map((f) => `${s.section} · ${f.field}`));
}

function paramValue(detail, param) {
  const i = param.indexOf(" · ");
  if (i < 0) return null;
  const section = configSections(detail)[param.slice(0, i)] || {};
  return section[param.slice(i + 3)] ?? null;
}

// A tag that every selected run has says nothing: a run's group is its other tags.
function tagLabel(detail, common) {
  const own = (detail.tags || []).filter((t) => !common.has(t));
  return own.length ? own.join(" + ") : "(no tag)";
}

// [{label, runs: [cache entries]}] in order of first appearance; null when not grouping.
export function groupRuns(runs, state) {
  if (state.group === "none" || !runs.length) return null;
  const common = new Set((runs[0].detail.tags || []).filter((t) => runs.every((c) => (c.detail.tags || []).includes(t))));
  const label = (c) => {
    if (state.group === "tag") return tagLabel(c.detail, common);
    if (state.group === "pipeline") return c.detail.pipeline_name || "(no pipeline)";
    const v = paramValue(c.detail, state.param);
    return `${state.param.split(" · ").pop()} = ${v === null ? "—" : v}`;
  };
  const groups = new Map();
  for (const c of runs) {
    const l = label(c);
    if (!groups.has(l)) groups.set(l, { label: l, runs: [] });
    groups.get(l).runs.push(c);
  }
  return [...groups.values()];
}
