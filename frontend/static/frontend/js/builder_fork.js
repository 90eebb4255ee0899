// The fork page: the builder on a run's plan, its stages up to the checkpoint's shown as
// inherited (read-only), the later ones editable; what differs from the parent is listed
// before submitting; the submit POSTs the later stages to /api/runs/<id>/fork/ and opens the
// new run. With picked checkpoints to merge (the lineage page's merge action: data.merge) the
// later stages are one new stage, a copy of the checkpoint's stage that starts from their
// average (init_merge).
import { errorLines, postJSON } from "./api.js";
import { h, pageData, replaceChildren } from "./dom.js";
import { createBuilder } from "./builder_core.js";
import { createChecker } from "./builder_check.js";

const data = pageData();
const keep = data.checkpoint.stage_index + 1; // stages the fork inherits as they are
const parentLater = data.plan.stages.slice(keep);
const status = document.getElementById("fork-status");
const queueSel = document.getElementById("fork-queue");
for (const q of data.queues) queueSel.append(h("option", { value: q, selected: q === data.run.queue || undefined }, q));

// The plan the builder opens: the parent's, or for a merge its stages up to the checkpoint's
// and a merge stage (the checkpoint's stage with a fresh name, without growth).
function startingPlan() {
  const merge = data.merge || [];
  if (merge.length === 0) return data.plan;
  const kept = data.plan.stages.slice(0, keep);
  const names = new Set(kept.map((s) => s.name));
  let name = "merge";
  for (let k = 2; names.has(name); k += 1) name = `merge-${k}`;
  const stage = { ...JSON.parse(JSON.stringify(data.plan.stages[keep - 1])), name };
  delete stage.grow;
  stage.init_merge = merge.map((m) => ({ run: m.run, step: m.step, weight: m.weight }));
  return { ...data.plan, stages: [...kept, stage] };
}

// Every leaf of a value as dotted path -> JSON text ("optimizer.lr" -> "0.003").
function leaves(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !(Array.isArray(value) && value.every((x) => x === null || typeof x !== "object"))) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix] = JSON.stringify(value);
  }
  return out;
}

// [path, parent's value or null, fork's value or null] for each difference, stage by stage.
function stageDiff(before, after, offset) {
  const out = [];
  for (let i = 0; i < Math.max(before.length, after.length); i += 1) {
    const p = `stages.${offset + i}`;
    const a = before[i];
    const b = after[i];
    if (a === undefined) { out.push([p, null, `new stage “${b && b.name}”`]); continue; }
    if (b === undefined) { out.push([p, `stage “${a.name}”`, "removed"]); continue; }
    const la = leaves(a);
    const lb = leaves(b);
    for (const k of new Set([...Object.keys(la), ...Object.keys(lb)])) {
      if (la[k] !== lb[k]) out.push([`${p}.${k}`, la[k] ?? "(default)", lb[k] ?? "(default)"]);
    }
  }
  return out;
}

function showDiff(plan) {
  const later = Array.isArray(plan.stages) ? plan.stages.slice(keep) : [];
  const diff = stageDiff(parentLater, later, keep);
  document.getElementById("fork-same").hidden = diff.length > 0;
  replaceChildren(document.getElementById("fork-diff"), diff.map(([path, a, b]) => h("li", { dataset: { path } }, h("code", {}, path), " ",
    a === null ? null : h("span", { class: "old" }, a), a === null ? null : " → ", h("span", { class: "new" }, b))));
}

let checker = null;
const builder = createBuilder({
  schema: data.schema,
  sources: { builtin: data.builtin_sources, datasets: data.datasets },
  plan: startingPlan(),
  planForm: document.getElementById("plan-form"),
  stagesRoot: document.getElementById("stages"),
  firstEditable: keep,
  readOnlyPlan: true,
  onChange(plan) { showDiff(plan); if (checker) checker.soon(); },
  onSyntaxError: () => {},
});
checker = createChecker({ builder, errList: document.getElementById("plan-errors"), okLine: document.getElementById("plan-ok"),
  chart: document.getElementById("chart-lr-preview"), team: data.team });

async function submit() {
  const btn = document.getElementById("fork-submit");
  if (!(await checker.check())) { status.textContent = "Fix the errors first."; return; }
  const body = { checkpoint: data.checkpoint.id, stages: builder.plan().stages.slice(keep) };
  const name = document.getElementById("fork-name").value.trim();
  if (name) body.name = name;
  if (queueSel.value) body.queue = queueSel.value;
  btn.disabled = true;
  status.textContent = "creating the fork…";
  try {
    const run = await postJSON(`/api/runs/${data.run.id}/fork/`, body);
    window.location.href = `/runs/${run.id}/`;
  } catch (e) {
    checker.show(errorLines(e));
    status.textContent = "Not forked: see the errors.";
    btn.disabled = false;
  }
}

document.getElementById("fork-submit").addEventListener("click", submit);
window.stagewiseBuilder = builder;
showDiff(builder.plan());
checker.check();
