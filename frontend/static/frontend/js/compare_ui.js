// The compare page's panels, drawn from the selection and the runs read (compare_store.js):
// run and key pickers, the alignment and grouping controls, one chart per key, the runs'
// continual-learning metrics and the config differences (compare_config.js).
import { fmtNum, h, replaceChildren } from "./dom.js";
import { differingParams } from "./compare_config.js";
import { COLORS, boundaryShapes, runName, traces, xMapper } from "./compare_traces.js";

const el = (id) => document.getElementById(id);
const X_TITLES = { global: "global step", stage: "step within stage", "from-stage": "steps since the start of stage", tokens: "tokens seen" };

// onToggle(id, checked) when a run's box changes.
export function renderRunPicker(allRuns, state, onToggle) {
  const f = el("run-filter").value.toLowerCase();
  const shown = allRuns.filter((r) => !f || r.name.toLowerCase().includes(f) || state.runs.includes(r.id)
    || (r.tags || []).some((t) => t.toLowerCase().includes(f)));
  replaceChildren(el("run-picker"), shown.map((r) =>
    h("label", {}, h("input", { type: "checkbox", value: r.id, checked: state.runs.includes(r.id),
      onchange: (e) => onToggle(r.id, e.target.checked) }),
    `#${r.id} ${r.name}`, h("span", { class: `badge state-${r.state}` }, r.state),
    (r.tags || []).map((t) => h("span", { class: "tag" }, t)),
    r.parent ? h("span", { class: "muted small" }, `fork of #${r.parent}`) : null)));
}

// The keys of the selected runs; with none chosen yet, train/loss is chosen. onToggle(key, checked).
export function renderKeyPicker(runs, state, onToggle) {
  const all = [...new Set(runs.flatMap((c) => c.keys))].sort();
  if (!state.keys.length && all.includes("train/loss")) state.keys.push("train/loss");
  replaceChildren(el("key-picker"), all.length ? all.map((k) => h("label", {}, h("input", { type: "checkbox", value: k,
    checked: state.keys.includes(k), onchange: (e) => onToggle(k, e.target.checked) }), k)) :
    [h("p", { class: "muted" }, state.runs.length ? "The selected runs have no series yet." : "Choose runs to see their series.")]);
}

// The stage choice of mode=from-stage (the stage indexes the runs have) and the differing
// fields of group=param; both kept in the state.
export function renderControls(runs, state, diff) {
  const most = Math.max(1, ...runs.map((c) => (c.detail.stages || []).length));
  const stageSel = el("align-stage");
  replaceChildren(stageSel, Array.from({ length: most }, (_, i) => h("option", { value: i }, `stage ${i}`)));
  stageSel.value = String(Math.min(state.stage, most - 1));
  stageSel.hidden = state.mode !== "from-stage";
  const params = differingParams(diff);
  if (state.group === "param" && !params.includes(state.param)) state.param = params[0] || "";
  const paramSel = el("group-param");
  replaceChildren(paramSel, params.length ? params.map((p) => h("option", { value: p }, p)) : [h("option", { value: "" }, "no field differs")]);
  paramSel.value = state.param;
  paramSel.hidden = state.group !== "param";
  el("band").hidden = state.group === "none";
}

// Which selected runs the chosen x mode cannot place (no such stage, no token count).
function unplaced(runs, state, key) {
  return runs.filter((c) => c.series.has(key) && c.series.get(key).steps.length && !xMapper(c.detail, state));
}

export function renderCharts(runs, groups, state) {
  const box = el("compare-charts");
  const cards = state.keys.map((key) => box.querySelector(`[data-key="${CSS.escape(key)}"]`)
    || h("div", { class: "card", dataset: { key } }, h("h2", {}, key), h("div", { class: "chart compare-chart" }), h("p", { class: "muted small unplaced", hidden: true })));
  replaceChildren(box, cards);
  const groupOf = new Map((groups || []).flatMap((g, gi) => g.runs.map((c) => [c.detail.id, gi])));
  const colorOf = (c, ri) => COLORS[(groups ? groupOf.get(c.detail.id) : ri) % COLORS.length];
  const xTitle = X_TITLES[state.mode] + (state.mode === "from-stage" ? ` ${state.stage}` : "");
  cards.forEach((card) => {
    const key = card.dataset.key;
    Plotly.react(card.querySelector(".chart"), traces(key, runs, groups, state), {
      margin: { l: 55, r: 15, t: 28, b: 40 }, hovermode: "x unified", legend: { orientation: "h", y: -0.2 },
      shapes: boundaryShapes(runs, state, colorOf),
      xaxis: { title: { text: xTitle } }, yaxis: { type: state.logy ? "log" : "linear" } }, { responsive: true, displaylogo: false });
    const left = unplaced(runs, state, key);
    const note = card.querySelector(".unplaced");
    note.hidden = !left.length;
    note.textContent = left.length ? `Not drawn (${state.mode === "tokens" ? "no token count" : `no stage ${state.stage}`}): ${left.map(runName).join(", ")}` : "";
  });
}

// ACC / BWT / FWT / average forgetting per run (RunOut.analysis; null before any eval).
export function renderMetrics(runs) {
  el("cl-empty").hidden = runs.length > 0;
  replaceChildren(document.querySelector("#cl-table tbody"), runs.map((c) => {
    const a = c.detail.analysis;
    return h("tr", { dataset: { run: c.detail.id } }, h("td", {}, runName(c)),
      h("td", {}, a ? a.metric : "—"),
      ["acc", "bwt", "fwt", "avg_forgetting"].map((k) => h("td", { class: "num", dataset: { metric: k } }, fmtNum(a ? a[k] : null, 3))));
  }));
}

function shown(text) {
  if (text === null) return "—";
  try {
    const v = JSON.parse(text);
    return typeof v === "string" ? v : text;
  } catch { return text; }
}

const cell = (text, attrs = {}) => h("td", { title: shown(text), ...attrs }, h("div", { class: "cell" }, shown(text)));

// Only the fields that differ, by section, one column per run; long values are cut (the
// whole value on hover) so that the table fits the page.
export function renderDiff(runs, diff) {
  const head = document.querySelector("#diff-table thead");
  const body = document.querySelector("#diff-table tbody");
  el("diff-empty").hidden = runs.length >= 2;
  if (runs.length < 2) { replaceChildren(head, []); replaceChildren(body, []); return; }
  replaceChildren(head, [h("tr", {}, h("th", { class: "field" }, "setting"),
    runs.map((c) => h("th", { title: runName(c) }, h("div", { class: "cell" }, runName(c)))))]);
  const rows = diff.flatMap((s) => [
    h("tr", { class: "section", dataset: { section: s.section } }, h("th", { colspan: runs.length + 1 },
      s.section, h("span", { class: "muted small" }, ` · ${s.fields.length} of ${s.total} fields differ`))),
    ...s.fields.map((f) => h("tr", { dataset: { field: `${s.section} · ${f.field}` } }, cell(JSON.stringify(f.field), { class: "field" }),
      f.values.map((v) => cell(v, { class: "differs" })))),
  ]);
  replaceChildren(body, rows.length ? rows : [h("tr", {}, h("td", { colspan: runs.length + 1, class: "muted" }, "The selected runs are configured the same."))]);
}
