// The run page: live charts (socket + catch-up), stage timeline, stability gaps, forgetting
// matrix, continual-learning metrics (pushed with socket batches), LR-law fit, checkpoints with
// fork, events, cancel.
import { ApiError, errorLines, getJSON, postJSON } from "./api.js";
import { fmtBytes, fmtDuration, fmtNum, h, pageData, replaceChildren } from "./dom.js";
import { renderAnalysis } from "./run_analysis_ui.js";
import { renderGapTable } from "./run_gaps_ui.js";
import { heatmap, LiveChart } from "./run_charts_ui.js";
import { LrLawPanel } from "./run_lr_law.js";
import { SeriesStore } from "./run_store.js";
import { connectRun } from "./run_socket.js";

const data = pageData();
const runId = data.id;
const base = `/api/runs/${runId}`;
const store = new SeriesStore();
const MAX_AFTER = 50000;

const evalMetricSel = document.getElementById("eval-metric");
const charts = {
  train: new LiveChart(document.getElementById("chart-train"), { ytitle: "loss" }),
  eval: new LiveChart(document.getElementById("chart-eval"), {
    ytitle: evalMetricSel.value, label: (k) => k.split("/")[1] }),
  lr: new LiveChart(document.getElementById("chart-lr"), { ytitle: "lr", height: 260 }),
};
window.stagewiseCharts = charts; // read by the browser tests

function chartFor(key) {
  if (key === "train/loss") return charts.train;
  if (key === "lr") return charts.lr;
  const p = key.split("/");
  if (p[0] === "eval" && p.length === 3 && p[2] === evalMetricSel.value) return charts.eval;
  return null; // stored, but not drawn on this page
}

// ---------------------------------------------------------------- live series
let syncing = false;
let buffered = [];
let summary = null;

function draw(key, steps, values) {
  const fresh = store.merge(key, steps, values);
  const chart = chartFor(key);
  if (chart && fresh.steps.length) chart.append(key, fresh.steps, fresh.values);
  return fresh.steps.length;
}

async function fullLoad() {
  const { keys } = await getJSON(`${base}/metrics/`);
  if (!keys.length) return;
  const q = encodeURIComponent(keys.join(","));
  const { series } = await getJSON(`${base}/series/?keys=${q}&max_points=2000`);
  for (const [key, s] of Object.entries(series)) {
    store.reset(key, s.steps);
    const chart = chartFor(key);
    if (chart) chart.setSeries(key, s.steps, s.values);
  }
}

async function catchUp(keys) {
  for (const key of keys) {
    for (;;) {
      const after = store.lastStep(key);
      const url = `${base}/series/?keys=${encodeURIComponent(key)}&after_step=${after}`;
      const s = (await getJSON(url)).series[key];
      draw(key, s.steps, s.values);
      if (s.steps.length < MAX_AFTER) break;
    }
  }
}

// Run fn while socket batches wait in `buffered`; afterwards replay them (dedupe by step).
async function withSync(fn) {
  syncing = true;
  try { await fn(); } catch (e) { showError(e); }
  syncing = false;
  const queued = buffered;
  buffered = [];
  queued.forEach(onMessage);
}

let analysisTimer = null;
function onPoints(msg) {
  const gaps = Object.entries(msg.series)
    .filter(([key, s]) => s.steps.length && store.gapBefore(key, Math.min(...s.steps)))
    .map(([key]) => key);
  if (gaps.length) {
    buffered.push(msg);
    withSync(() => catchUp(gaps));
    return;
  }
  let evalSeen = false;
  for (const [key, s] of Object.entries(msg.series)) {
    draw(key, s.steps, s.values);
    if (key.startsWith("eval/")) evalSeen = true;
  }
  if (msg.analysis) showContinual(msg.analysis);
  if (evalSeen) {
    clearTimeout(analysisTimer);
    analysisTimer = setTimeout(loadAnalysis, 800);
  }
}

function onMessage(msg) {
  if (syncing) { buffered.push(msg); return; }
  if (msg.type === "run.points") onPoints(msg);
  else if (msg.type === "run.event") onEvent(msg);
}

let firstOpen = true;
const socket = connectRun(runId, {
  onOpen: () => withSync(async () => {
    if (firstOpen) { firstOpen = false; await fullLoad(); } else loadContinual(); // pushes missed while away
    await catchUp(store.keys()); // a reconnect: everything after the last drawn step
  }),
  onMessage,
  onStatus: (s) => {
    const el = document.getElementById("live-status");
    el.textContent = s;
    el.dataset.state = s;
  },
});
window.stagewiseSocket = socket;

// Zoom: fetch a finer window for the visible range; reset: the whole run again.
for (const chart of [charts.train, charts.eval]) {
  chart.onZoom(async (range) => {
    const keys = chart.keys();
    if (!keys.length) return;
    let url = `${base}/series/?keys=${encodeURIComponent(keys.join(","))}&max_points=1000`;
    if (range) url += `&min_step=${range[0]}&max_step=${range[1]}`;
    try {
      const { series } = await getJSON(url);
      for (const [key, s] of Object.entries(series)) chart.setSeries(key, s.steps, s.values);
    } catch (e) { showError(e); }
  });
}

// ---------------------------------------------------------------- a fork's shared prefix
// A fork stores only points after its fork step: draw the parent's points up to it (once) as
// muted traces. They live outside `store`, so dedupe and catch-up never see them.
let parentSeries = null; // key -> {steps, values}
const drawsParentKey = (k) => k === "train/loss" || k === "lr" || (k.startsWith("eval/") && k.split("/").length === 3);

function drawParentPrefix() {
  if (!parentSeries) return;
  for (const [key, s] of Object.entries(parentSeries)) {
    chartFor(key)?.addParentPrefix(key, s.steps, s.values, data.parent);
  }
}

async function loadParentPrefix() {
  if (!data.parent || data.fork_step === null || data.fork_step === undefined) return;
  const pbase = `/api/runs/${data.parent}`;
  try {
    const keys = (await getJSON(`${pbase}/metrics/`)).keys.filter(drawsParentKey);
    if (!keys.length) return;
    const q = encodeURIComponent(keys.join(","));
    const { series } = await getJSON(`${pbase}/series/?keys=${q}&max_step=${data.fork_step}&max_points=1000`);
    parentSeries = {};
    for (const [key, s] of Object.entries(series)) {
      const n = s.steps.filter((st) => st <= data.fork_step).length; // steps are sorted
      parentSeries[key] = { steps: s.steps.slice(0, n), values: s.values.slice(0, n) };
    }
    drawParentPrefix();
  } catch (e) {
    logEvent(`parent #${data.parent} points unavailable: ${e}`); // the fork's own curves still work
  }
}

evalMetricSel.addEventListener("change", async () => {
  Plotly.purge(charts.eval.div);
  charts.eval = new LiveChart(document.getElementById("chart-eval"), {
    ytitle: evalMetricSel.value, label: (k) => k.split("/")[1] });
  drawParentPrefix();
  const keys = store.keys().filter((k) => chartFor(k) === charts.eval);
  if (keys.length) {
    const { series } = await getJSON(`${base}/series/?keys=${encodeURIComponent(keys.join(","))}&max_points=2000`);
    for (const [key, s] of Object.entries(series)) charts.eval.setSeries(key, s.steps, s.values);
  }
  if (summary) charts.eval.setStages(summary.stages);
  loadAnalysis();
});

// ---------------------------------------------------------------- summary, timeline, events
function showError(e) {
  const el = document.getElementById("run-error");
  el.textContent = e instanceof ApiError ? errorLines(e).map(([k, m]) => (k ? `${k}: ${m}` : m)).join("; ") : String(e);
}

const events = document.getElementById("events");
function logEvent(text, kind = "") {
  events.prepend(h("li", { class: kind }, h("time", {}, new Date().toLocaleTimeString()), " ", text));
}

const seenStates = new Map();
function renderSummary(s) {
  const prevRun = seenStates.get("run");
  if (prevRun && prevRun !== s.state) logEvent(`run ${s.state}`, `state-${s.state}`);
  seenStates.set("run", s.state);
  for (const st of s.stages) {
    const prev = seenStates.get(st.index);
    if (prev !== undefined && prev !== st.state) logEvent(`stage ${st.name}: ${st.state}`);
    seenStates.set(st.index, st.state);
  }
  const badge = document.getElementById("run-state");
  badge.textContent = s.state;
  badge.className = `badge state-${s.state}`;
  const p = s.progress;
  document.getElementById("run-progress-bar").style.width = `${(p.fraction * 100).toFixed(1)}%`;
  document.getElementById("run-progress-text").textContent =
    `stage ${p.stage_index + 1}/${p.stage_count} (${p.stage_name}) · step ${p.step} of ${p.total}` +
    (p.eta_seconds !== null ? ` · ETA ${fmtDuration(p.eta_seconds)}` : "");
  if (s.error) document.getElementById("run-error").textContent = s.error;
  renderLiveness(s);
  const total = p.total || 1;
  replaceChildren(document.getElementById("timeline"), s.stages.map((st) => {
    const done = st.state === "succeeded" || st.state === "skipped" ? st.end_step : (st.last_step ?? st.start_step);
    const frac = Math.max(0, Math.min(1, (done - st.start_step) / (st.end_step - st.start_step)));
    return h("div", { class: `stage state-${st.state}`, style: `flex:${(st.end_step - st.start_step) / total}`,
      title: `${st.name}: steps ${st.start_step + 1}–${st.end_step} (${st.state})` },
    h("div", { class: "stage-fill", style: `width:${(frac * 100).toFixed(1)}%` }),
    h("span", { class: "stage-name" }, st.name), h("span", { class: "stage-state" }, st.state));
  }));
  const cancel = document.getElementById("cancel-run");
  cancel.hidden = !data.can_write || ["succeeded", "failed", "canceled"].includes(s.state);
  renderCheckpoints(s.checkpoints);
}

// An external run's only sign of life is its reports: how long ago the last one came, and a
// warning once that is past the server's stale threshold (the run is not failed for it).
function fmtAgo(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}
function renderLiveness(s) {
  const last = document.getElementById("run-last-report");
  const stale = document.getElementById("run-stale");
  if (!last || !stale) return;
  const show = s.external && s.state === "running" && s.last_report_age !== null;
  last.hidden = !show;
  stale.hidden = !(show && s.stale);
  if (!show) return;
  last.textContent = s.last_report_at ? `last report ${fmtAgo(s.last_report_age)} ago` : "no report yet";
  last.title = s.last_report_at ? new Date(s.last_report_at).toLocaleString() : "";
  last.classList.toggle("stale", s.stale);
  stale.textContent = `⚠ no report for ${fmtAgo(s.last_report_age)} — the job may be gone; cancel it if so`;
}

function renderCheckpoints(ckpts) {
  document.getElementById("ckpt-empty").hidden = ckpts.length > 0;
  replaceChildren(document.querySelector("#ckpt-table tbody"), ckpts.map((c) => h("tr", {},
    h("td", {}, c.step), h("td", {}, summary.stages[c.stage_index]?.name ?? c.stage_index),
    h("td", {}, c.stage_end ? "stage end" : "periodic"), h("td", {}, fmtBytes(c.size_bytes)),
    h("td", {}, data.can_write ? h("button", { class: "small fork-btn", dataset: { ckpt: c.id },
      onclick: () => fork(c) }, "Fork from here") : ""))));
}

async function fork(ckpt) {
  const err = document.getElementById("fork-error");
  err.textContent = "";
  try {
    const run = await postJSON(`${base}/fork/`, { checkpoint: ckpt.id });
    window.location.href = `/runs/${run.id}/`;
  } catch (e) {
    err.textContent = errorLines(e).map(([k, m]) => (k ? `${k}: ${m}` : m)).join("; ");
  }
}

let lastStagesSig = "";
async function loadSummary() {
  try {
    summary = await getJSON(`/api/ui/runs/${runId}/`);
  } catch (e) { showError(e); return; }
  const sig = JSON.stringify(summary.stages.map((s) => [s.start_step, s.end_step, s.name]));
  if (sig !== lastStagesSig) {
    lastStagesSig = sig;
    for (const c of Object.values(charts)) c.setStages(summary.stages);
  }
  renderSummary(summary);
  lrLaw.update(summary.stages, summary.progress.stage_index);
}

function onEvent(msg) {
  const detail = Object.entries(msg).filter(([k]) => !["type", "run", "event"].includes(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  logEvent(`${msg.event}${detail ? ` (${detail})` : ""}`, `event-${msg.event}`);
  loadSummary();
  if (msg.event === "stage_finished") { loadAnalysis(); loadContinual(); }
}

document.getElementById("cancel-run").addEventListener("click", async () => {
  if (!window.confirm("Cancel this run? The running stage stops at its next step.")) return;
  try { await postJSON(`${base}/cancel/`); logEvent("cancel requested"); loadSummary(); } catch (e) { showError(e); }
});

// ---------------------------------------------------------------- analysis
async function loadAnalysis() {
  let a;
  try { a = await getJSON(`/api/ui/runs/${runId}/analysis/`); } catch (e) { showError(e); return; }
  const rows = renderGapTable(document.querySelector("#gaps-table tbody"), document.getElementById("gaps-empty"), a);
  const metric = evalMetricSel.value;
  charts.eval.setAnnotations(rows.filter((g) => g.dropped && g.metric === metric).map((g) => ({
    x: g.extreme_step, y: g.extreme_value, xref: "x", yref: "y", text: `gap ${fmtNum(g.drop_depth, 2)}`,
    showarrow: true, arrowhead: 2, ax: 0, ay: metric === "acc" ? 30 : -30, font: { size: 10 } })));
  const m = a.matrices.find((x) => x.metric === (metric === "acc" ? "acc" : "loss")) || a.matrices[0];
  if (m) heatmap(document.getElementById("chart-matrix"), m);
}

// Continual-learning metrics: fetched once, then replaced by the `analysis` object that socket
// batches carry whenever they changed it (a fetch that a push overtook is dropped).
const analysisPanel = document.getElementById("analysis-panel");
let pushes = 0;
function showContinual(a) {
  pushes += 1;
  renderAnalysis(analysisPanel, a);
}
async function loadContinual() {
  const before = pushes;
  try {
    const a = await getJSON(`${base}/analysis/`);
    if (pushes === before) renderAnalysis(analysisPanel, a);
  } catch (e) { showError(e); }
}

const lrLaw = new LrLawPanel(runId, { onError: showError });

loadSummary().then(loadAnalysis);
loadParentPrefix();
loadContinual();
// The socket carries points and events; the summary (progress, ETA, checkpoints) is polled.
setInterval(() => {
  if (!summary || !["succeeded", "failed", "canceled"].includes(summary.state)) loadSummary();
}, 3000);
