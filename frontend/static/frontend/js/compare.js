// Compare: runs x keys overlaid by global step or by step within a stage, EMA smoothing,
// log-y, the runs' continual-learning metrics and a table of the plan settings that differ. The selection lives in the URL.
// A fork's curves include the history it shares with its ancestors (series ?lineage=true), drawn muted up to its
// first own step, so every run starts at step 0.
import { getJSON } from "./api.js";
import { fmtNum, h, pageData, replaceChildren } from "./dom.js";

const data = pageData();
const params = new URLSearchParams(window.location.search);
const state = {
  runs: (params.get("runs") || "").split(",").filter(Boolean).map(Number),
  keys: (params.get("keys") || "").split(",").filter(Boolean),
  mode: params.get("mode") || "global",
  ema: Number(params.get("ema") || 0),
  logy: params.get("logy") === "1",
};
const cache = new Map(); // run id -> {detail, keys, series: Map(key -> {steps, values, own_from_step})}
const COLORS = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#3c4858", "#c0392b", "#27ae60"];
const el = (id) => document.getElementById(id);
el("x-mode").value = state.mode;
el("ema").value = state.ema;
el("ema-value").textContent = state.ema;
el("logy").checked = state.logy;

function syncUrl() {
  const q = new URLSearchParams();
  if (state.runs.length) q.set("runs", state.runs.join(","));
  if (state.keys.length) q.set("keys", state.keys.join(","));
  if (state.mode !== "global") q.set("mode", state.mode);
  if (state.ema) q.set("ema", state.ema);
  if (state.logy) q.set("logy", "1");
  history.replaceState(null, "", `?${q}`);
}

function renderRunPicker() {
  const f = el("run-filter").value.toLowerCase();
  const known = new Map(data.runs.map((r) => [r.id, r]));
  replaceChildren(el("run-picker"), data.runs.filter((r) => !f || r.name.toLowerCase().includes(f) || state.runs.includes(r.id)).map((r) =>
    h("label", {}, h("input", { type: "checkbox", value: r.id, checked: state.runs.includes(r.id),
      onchange: (e) => { toggle(state.runs, r.id, e.target.checked); load(); } }),
    `#${r.id} ${r.name}`, h("span", { class: `badge state-${r.state}` }, r.state),
    r.parent ? h("span", { class: "muted small" }, `fork of #${r.parent}${known.has(r.parent) ? "" : ""}`) : null)));
}

function toggle(list, v, on) {
  const i = list.indexOf(v);
  if (on && i < 0) list.push(v);
  if (!on && i >= 0) list.splice(i, 1);
}

// A fork inherits its ancestors' series up to its fork step, so their keys are its keys too.
async function ancestorKeys(detail) {
  const keys = [];
  const seen = new Set([detail.id]);
  for (let id = detail.parent; id && !seen.has(id);) {
    seen.add(id);
    try {
      const [d, k] = await Promise.all([getJSON(`/api/runs/${id}/`), getJSON(`/api/runs/${id}/metrics/`)]);
      keys.push(...k.keys);
      id = d.parent;
    } catch { break; } // an ancestor the user cannot see: the series answer leaves it out too
  }
  return keys;
}

async function ensureRun(id) {
  if (!cache.has(id)) {
    const [detail, keys] = await Promise.all([getJSON(`/api/runs/${id}/`), getJSON(`/api/runs/${id}/metrics/`)]);
    const inherited = await ancestorKeys(detail);
    cache.set(id, { detail, keys: [...new Set([...keys.keys, ...inherited])], series: new Map() });
  }
  const c = cache.get(id);
  const missing = state.keys.filter((k) => c.keys.includes(k) && !c.series.has(k));
  if (missing.length) {
    const q = encodeURIComponent(missing.join(","));
    const { series } = await getJSON(`/api/runs/${id}/series/?keys=${q}&max_points=2000&lineage=true`);
    for (const [k, s] of Object.entries(series)) c.series.set(k, s);
  }
  return c;
}

function ema(values, alpha) {
  if (!alpha) return values;
  let m = null;
  return values.map((v) => (m = m === null ? v : alpha * m + (1 - alpha) * v));
}

// One run's line as (up to) two parts: the points inherited from its ancestors (before its first own step) and
// its own. The inherited part is muted like the run page's parent prefix and shares the run's legend entry.
function lineParts(s, ys) {
  const own = s.own_from_step === null || s.own_from_step === undefined ? -1 : s.steps.findIndex((st) => st >= s.own_from_step);
  const cut = own < 0 ? s.steps.length : own;
  return [
    { inherited: true, steps: s.steps.slice(0, cut), ys: ys.slice(0, cut) },
    { inherited: false, steps: s.steps.slice(cut), ys: ys.slice(cut) },
  ].filter((p) => p.steps.length);
}

function trace(id, name, part, color, dash, alone) {
  const t = { x: part.steps, y: part.ys, name, mode: "lines", legendgroup: String(id), meta: part.inherited ? "inherited" : "own",
    line: { color, dash } };
  if (!part.inherited) return t;
  return { ...t, name: `${name} (inherited)`, opacity: 0.45, showlegend: alone, line: { color, dash, width: 1.4 } };
}

function traces(key) {
  const out = [];
  state.runs.forEach((id, ri) => {
    const c = cache.get(id);
    const s = c && c.series.get(key);
    if (!s || !s.steps.length) return;
    const ys = ema(s.values, state.ema); // over the whole line: a fork's smoothing carries on from its history
    const color = COLORS[ri % COLORS.length];
    const name = `#${id} ${c.detail.name}`;
    const parts = lineParts(s, ys);
    if (state.mode === "global") {
      parts.forEach((p) => out.push(trace(id, name, p, color, "solid", parts.length === 1)));
      return;
    }
    c.detail.stages.forEach((st, si) => {
      const inStage = parts.map((p) => {
        const q = { inherited: p.inherited, steps: [], ys: [] };
        p.steps.forEach((step, i) => { if (step > st.start_step && step <= st.end_step) { q.steps.push(step - st.start_step); q.ys.push(p.ys[i]); } });
        return q;
      }).filter((q) => q.steps.length);
      const dash = ["solid", "dot", "dash", "longdash"][si % 4];
      inStage.forEach((q) => out.push(trace(id, `${name} · ${st.name}`, q, color, dash, inStage.length === 1)));
    });
  });
  return out;
}

function renderCharts() {
  const box = el("compare-charts");
  const divs = state.keys.map((key) => {
    let card = box.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (!card) card = h("div", { class: "card", dataset: { key } }, h("h2", {}, key), h("div", { class: "chart compare-chart" }));
    return card;
  });
  replaceChildren(box, divs);
  divs.forEach((card) => {
    const key = card.dataset.key;
    Plotly.react(card.querySelector(".chart"), traces(key), {
      margin: { l: 55, r: 15, t: 10, b: 40 }, hovermode: "x unified", legend: { orientation: "h", y: -0.2 },
      xaxis: { title: { text: state.mode === "global" ? "global step" : "step within stage" } },
      yaxis: { type: state.logy ? "log" : "linear" } }, { responsive: true, displaylogo: false });
  });
}

function flatten(obj, prefix = "", out = {}) {
  if (obj && typeof obj === "object" && !Array.isArray(obj)) {
    for (const [k, v] of Object.entries(obj)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else out[prefix] = JSON.stringify(obj);
  return out;
}

function renderDiff() {
  const runs = state.runs.map((id) => cache.get(id)).filter(Boolean);
  el("diff-empty").hidden = runs.length >= 2;
  if (runs.length < 2) { replaceChildren(document.querySelector("#diff-table thead"), []); replaceChildren(document.querySelector("#diff-table tbody"), []); return; }
  const flats = runs.map((c) => {
    const p = c.detail.plan;
    const f = flatten({ model: p.model, seed: p.seed });
    (p.stages || []).forEach((st, i) => flatten(st, `stage ${i} (${st.name})`, f));
    return f;
  });
  const keys = [...new Set(flats.flatMap((f) => Object.keys(f)))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const differing = keys.filter((k) => new Set(flats.map((f) => f[k] ?? "—")).size > 1);
  replaceChildren(document.querySelector("#diff-table thead"), [h("tr", {}, h("th", {}, "setting"), runs.map((c) => h("th", {}, `#${c.detail.id} ${c.detail.name}`)))]);
  replaceChildren(document.querySelector("#diff-table tbody"), differing.length ? differing.map((k) =>
    h("tr", {}, h("td", {}, k), flats.map((f) => h("td", { class: "differs" }, f[k] ?? "—")))) :
    [h("tr", {}, h("td", { colspan: runs.length + 1, class: "muted" }, "The selected runs have identical plans."))]);
}

// ACC / BWT / FWT / average forgetting per run (RunOut.analysis; null before any eval).
function renderMetrics() {
  const runs = state.runs.map((id) => cache.get(id)).filter(Boolean);
  el("cl-empty").hidden = runs.length > 0;
  replaceChildren(document.querySelector("#cl-table tbody"), runs.map((c) => {
    const a = c.detail.analysis;
    return h("tr", { dataset: { run: c.detail.id } }, h("td", {}, `#${c.detail.id} ${c.detail.name}`),
      h("td", {}, a ? a.metric : "—"),
      ["acc", "bwt", "fwt", "avg_forgetting"].map((k) => h("td", { class: "num", dataset: { metric: k } }, fmtNum(a ? a[k] : null, 3))));
  }));
}

function renderKeyPicker() {
  const all = [...new Set(state.runs.flatMap((id) => (cache.get(id) || { keys: [] }).keys))].sort();
  if (!state.keys.length && all.includes("train/loss")) state.keys.push("train/loss");
  replaceChildren(el("key-picker"), all.length ? all.map((k) => h("label", {}, h("input", { type: "checkbox", value: k,
    checked: state.keys.includes(k), onchange: (e) => { toggle(state.keys, k, e.target.checked); load(); } }), k)) :
    [h("p", { class: "muted" }, state.runs.length ? "The selected runs have no series yet." : "Choose runs to see their series.")]);
}

async function load() {
  syncUrl();
  renderRunPicker();
  el("compare-status").textContent = "loading…";
  try {
    await Promise.all(state.runs.map(ensureRun));
    await Promise.all(state.runs.map(ensureRun)); // second pass: keys added by the key picker default
    el("compare-status").textContent = state.runs.length ? `${state.runs.length} runs · ${state.keys.length} series` : "Choose runs to compare.";
  } catch (e) {
    el("compare-status").textContent = `Could not load: ${e.message}`;
  }
  renderKeyPicker();
  await Promise.all(state.runs.map(ensureRun)).catch(() => {});
  syncUrl();
  renderCharts();
  renderMetrics();
  renderDiff();
}

el("run-filter").addEventListener("input", renderRunPicker);
el("x-mode").addEventListener("change", (e) => { state.mode = e.target.value; syncUrl(); renderCharts(); });
el("ema").addEventListener("input", (e) => { state.ema = Number(e.target.value); el("ema-value").textContent = state.ema; syncUrl(); renderCharts(); });
el("logy").addEventListener("change", (e) => { state.logy = e.target.checked; syncUrl(); renderCharts(); });
load();
