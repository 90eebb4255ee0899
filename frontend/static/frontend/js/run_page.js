// The run page's controller: wires the live series (run_series.js over run_socket.js), the
// summary (polled while the run may change), the run's events (GET /api/runs/{id}/events/,
// re-read when a stage changes state or the socket reports an event), the analysis the socket
// pushes (run_analysis_store.js) and the panels that draw them: charts with their x axis,
// smoothing and log-y tools, the events lane and markers, stage timeline, stability gaps,
// forgetting matrix, continual-learning metrics, LR-law fit, checkpoints, forks, a failed
// run's traceback, name, tags and notes, cancel and delete.
import { getJSON, postJSON } from "./api.js";
import { pageData } from "./dom.js";
import { AnalysisStore, finishedMatrix } from "./run_analysis_store.js";
import { renderAnalysis } from "./run_analysis_ui.js";
import { RunAxes } from "./run_axes.js";
import { ChartTools } from "./run_chart_tools.js";
import { heatmap, LiveChart } from "./run_charts_ui.js";
import { renderEventList, renderFailure, renderForks } from "./run_events_ui.js";
import { gapAnnotations, renderGapTable } from "./run_gaps_ui.js";
import { LrLawPanel } from "./run_lr_law.js";
import { MetricChoices } from "./run_metrics_ui.js";
import { bindDelete, growthLabels, RunMeta } from "./run_meta_ui.js";
import { parentPrefix, RunSeries } from "./run_series.js";
import { connectRun } from "./run_socket.js";
import { clearNetworkError, EventLog, isFinished, showError, SummaryView } from "./run_summary_ui.js";

const data = pageData();
const runId = data.id;
const base = `/api/runs/${runId}`;
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- charts
const axes = new RunAxes();
const metrics = new MetricChoices($("eval-metric"), $("other-metric"));
const charts = {
  train: new LiveChart($("chart-train"), { ytitle: "loss", axes, lane: true }),
  eval: new LiveChart($("chart-eval"), { ytitle: "", axes, label: (k) => k.split("/")[1] }),
  lr: new LiveChart($("chart-lr"), { ytitle: "lr", height: 260, axes }),
  other: new LiveChart($("chart-other"), { ytitle: "", height: 260, axes }),
};
window.stagewiseCharts = charts; // read by the browser tests
const tools = Object.keys(charts).map((name) => new ChartTools(name, () => charts[name], axes));

function chartFor(key) {
  if (key === "train/loss") return charts.train;
  if (key === "lr") return charts.lr;
  if (metrics.isEval(key)) return key.split("/")[2] === metrics.eval.value ? charts.eval : null;
  return key === metrics.other.value ? charts.other : null;
}

// ---------------------------------------------------------------- state
let summary = null;
let timeline = null; // the last GET .../events/
let parentSeries = null; // a fork's parent points up to the fork step: key -> {steps, values}
let growth = []; // per stage index: the label of the model's growth at its start, or null
let paramsShown = false;
const log = new EventLog($("events"));
const summaryView = new SummaryView({ canWrite: data.can_write, log });
const lrLaw = new LrLawPanel(runId, { onError: showError });
const meta = new RunMeta(runId, { canWrite: data.can_write, onError: showError });
const showDelete = bindDelete(runId, { canWrite: data.can_write, log });
const analysis = new AnalysisStore(runId, ({ continual, boundaries }) => {
  if (continual) renderAnalysis($("analysis-panel"), continual);
  if (boundaries) renderBoundaries();
});
const series = new RunSeries(runId, {
  chartFor, onError: showError, onKeys: (keys) => metrics.update(keys), dispatch: (msg) => {
    if (msg.type === "run.points") onPoints(msg);
    else if (msg.type === "run.event") onEvent(msg);
  },
});

// Gap table, gap markers on the eval chart, matrix: from the pushed analysis and the stage
// states of the last summary.
function renderBoundaries() {
  const a = analysis.boundaries;
  if (!a) return;
  const drops = renderGapTable(document.querySelector("#gaps-table tbody"), $("gaps-empty"), a);
  charts.eval.setAnnotations(gapAnnotations(drops, metrics.eval.value));
  const m = finishedMatrix(a, summary ? summary.stages : [], metrics.eval.value);
  if (m) heatmap($("chart-matrix"), m);
}

function drawParentPrefix() {
  if (!parentSeries) return;
  for (const [key, s] of Object.entries(parentSeries)) chartFor(key)?.addParentPrefix(key, s.steps, s.values, data.parent);
}

async function loadParentPrefix() {
  try {
    parentSeries = await parentPrefix(data.parent, data.fork_step, (k) => k === "train/loss" || k === "lr" || metrics.isEval(k));
    drawParentPrefix();
  } catch (e) {
    log.add(`parent #${data.parent} points unavailable: ${e}`); // the fork's own curves still work
  }
}

// ---------------------------------------------------------------- metric choices, visibility
// Cards show only what the run has: a chart without points is hidden once the run is finished
// (a failed run shows its traceback instead of empty axes); the eval and "more metrics"
// pickers offer the run's own keys only.
function updateCards() {
  const keys = series.keys();
  const open = !summary || !isFinished(summary);
  const show = { "train-card": keys.includes("train/loss") || open, "lr-card": keys.includes("lr") || open,
    "eval-card": metrics.eval.options.length > 0, "other-card": metrics.other.options.length > 0,
    "matrix-card": metrics.eval.options.length > 0 };
  for (const [id, on] of Object.entries(show)) {
    const card = $(id);
    if (card.hidden === !on) continue;
    card.hidden = !on;
    if (on) card.querySelectorAll(".js-plotly-plot").forEach((d) => Plotly.Plots.resize(d));
  }
  $("charts").hidden = !Object.values(show).some(Boolean);
  showParams();
}

// The stages on every chart, each grown one with its growth label at its boundary.
function drawStages() {
  if (!summary) return;
  const stages = summary.stages.map((s) => ({ ...s, grow: growth[s.index] || null }));
  for (const c of Object.values(charts)) c.setStages(stages);
}

// A run that grows its model shows `model/params` in the "more metrics" chart (once: the
// picker stays the user's).
function showParams() {
  if (paramsShown || !growth.some(Boolean) || !metrics.other.querySelector('option[value="model/params"]')) return;
  paramsShown = true;
  if (metrics.other.value === "model/params") return;
  metrics.other.value = "model/params";
  switchMetric(charts.other);
}

async function switchMetric(chart) {
  chart.clear();
  chart.ytitle = chart === charts.eval ? metrics.eval.value : metrics.other.value;
  if (chart === charts.eval) drawParentPrefix();
  await series.reload(chart, series.keys().filter((k) => chartFor(k) === chart), { maxPoints: 2000 });
  if (chart === charts.eval) renderBoundaries();
}
metrics.onChange = (which) => switchMetric(which === "eval" ? charts.eval : charts.other);

// ---------------------------------------------------------------- summary, events
let lastStagesSig = "";
let lastStatesSig = "";
let eventsAt = 0;
const EVENTS_EVERY_MS = 9000; // a requeue and its resume may leave every state as it was
async function loadSummary() {
  try {
    summary = await getJSON(`/api/ui/runs/${runId}/`);
  } catch (e) { showError(e); return; }
  clearNetworkError();
  const sig = JSON.stringify(summary.stages.map((s) => [s.start_step, s.end_step, s.name]));
  if (sig !== lastStagesSig) {
    lastStagesSig = sig;
    axes.setStages(summary.stages);
    drawStages();
    tools.forEach((t) => t.refresh());
  }
  const states = JSON.stringify([summary.state, summary.stages.map((s) => s.state), summary.checkpoints.length]);
  if (states !== lastStatesSig || Date.now() - eventsAt > EVENTS_EVERY_MS) { lastStatesSig = states; loadEvents(); }
  summaryView.render(summary);
  showDelete(isFinished(summary));
  metrics.update(series.keys());
  updateCards();
  renderBoundaries(); // a stage that finished adds its matrix row
  lrLaw.update(summary.stages, summary.progress.stage_index, summary.free_form);
}

let tokensRead = false;
async function loadTokens() {
  if (tokensRead || !axes.tokensKey) return;
  tokensRead = true;
  const q = `keys=${encodeURIComponent(axes.tokensKey)}&lineage=true&max_points=5000`;
  const s = (await getJSON(`${base}/series/?${q}`)).series[axes.tokensKey];
  axes.addTokens(s.steps, s.values);
}

async function loadEvents() {
  eventsAt = Date.now();
  try {
    timeline = await getJSON(`${base}/events/`);
    axes.setAxes(timeline.axes);
    await loadTokens();
  } catch (e) { showError(e); return; }
  for (const c of Object.values(charts)) c.setEvents(timeline.events);
  tools.forEach((t) => t.refresh());
  renderEventList($("run-events"), timeline.events);
  $("run-events-empty").hidden = timeline.events.length > 0;
  renderForks($("run-forks"), timeline.forks);
  renderFailure($("run-failure"), timeline.failure);
}

function onPoints(msg) {
  analysis.push(msg);
  if (msg.sent_at && msg.max_step !== undefined) axes.extendClock(msg.max_step, msg.sent_at);
  const t = axes.tokensKey && msg.series[axes.tokensKey];
  if (t) axes.addTokens(t.steps, t.values);
  const fresh = Object.keys(msg.series).filter((k) => !metrics.known(k));
  if (fresh.length) { metrics.update(series.keys()); updateCards(); }
}

function onEvent(msg) {
  log.addEvent(msg);
  loadSummary();
  loadEvents();
}

// ---------------------------------------------------------------- wiring
let firstOpen = true;
const socket = connectRun(runId, {
  onOpen: () => series.sync(async () => {
    if (firstOpen) { firstOpen = false; await series.fullLoad(); updateCards(); } else {
      analysis.load().catch(showError); // pushes missed while away
      loadSummary(); // and what changed meanwhile (this also clears a "did not answer" line)
    }
    await series.catchUp(); // a reconnect: everything after the last drawn step
  }),
  onMessage: (msg) => series.receive(msg),
  onStatus: (s) => {
    const el = $("live-status");
    el.textContent = s;
    el.dataset.state = s;
  },
});
window.stagewiseSocket = socket;

// Zoom: a finer window for the visible range (raw points once they fit); reset: the whole run.
for (const name of ["train", "eval", "lr", "other"]) {
  const chart = charts[name];
  chart.onZoom((range) => series.reload(chart, chart.keys(), { range }));
}

$("cancel-run").addEventListener("click", async () => {
  if (!window.confirm("Cancel this run? The running stage stops at its next step.")) return;
  try { await postJSON(`${base}/cancel/`); log.add("cancel requested"); loadSummary(); } catch (e) { showError(e); }
});

loadSummary();
loadParentPrefix();
meta.load().then(() => {
  growth = growthLabels(meta.plan);
  drawStages();
  showParams();
}).catch(showError);
analysis.load().catch(showError);
// The socket carries points, analysis and events; the summary (progress, ETA, checkpoints) is
// polled.
setInterval(() => { if (!summary || !isFinished(summary)) loadSummary(); }, 3000);
