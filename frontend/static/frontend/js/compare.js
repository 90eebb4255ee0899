// The compare page's controller: runs x keys overlaid by global step, by step within each
// stage, by steps since one stage's start or by tokens, each run's stage boundaries drawn; EMA smoothing, log-y; runs
// grouped (by a tag, by pipeline or by a differing config field) as a mean with a band; the
// runs' continual-learning metrics and the config fields that differ. Everything chosen lives
// in the URL (compare_store.js); the data comes in two requests whatever the number of runs.
import { pageData } from "./dom.js";
import { CompareStore, selectionFromUrl, syncUrl, toggle } from "./compare_store.js";
import { configDiff, groupRuns } from "./compare_config.js";
import { renderCharts, renderControls, renderDiff, renderKeyPicker, renderMetrics, renderRunPicker } from "./compare_ui.js";

const data = pageData();
const state = selectionFromUrl(window.location.search);
const store = new CompareStore();
const el = (id) => document.getElementById(id);
const status = el("compare-status");

el("x-mode").value = state.mode;
el("ema").value = state.ema;
el("ema-value").textContent = state.ema;
el("logy").checked = state.logy;
el("group-by").value = state.group;
el("band").value = state.band;

// The picker lists the newest runs and every selected one (a link may name an older run).
function pickRuns() {
  const known = new Set(data.runs.map((r) => r.id));
  const extra = store.selected(state).filter((c) => !known.has(c.detail.id))
    .map(({ detail: d }) => ({ id: d.id, name: d.name, state: d.state, parent: d.parent, tags: d.tags }));
  renderRunPicker([...extra, ...data.runs], state, (id, on) => { toggle(state.runs, id, on); load(); });
}

function draw() {
  const runs = store.selected(state);
  const diff = configDiff(runs);
  renderControls(runs, state, diff);
  syncUrl(state);
  renderCharts(runs, groupRuns(runs, state), state);
  renderMetrics(runs);
  renderDiff(runs, diff);
}

function summary() {
  const gone = state.runs.filter((id) => store.missing.has(id));
  const note = gone.length ? ` · not found (deleted, or not your team's): ${gone.map((id) => `#${id}`).join(", ")}` : "";
  return state.runs.length ? `${state.runs.length - gone.length} runs · ${state.keys.length} series${note}` : "Choose runs to compare.";
}

async function load() {
  syncUrl(state);
  status.textContent = "loading…";
  status.dataset.state = "loading";
  try {
    await store.ensureRuns(state.runs);
    pickRuns();
    renderKeyPicker(store.selected(state), state, (k, on) => { toggle(state.keys, k, on); load(); });
    await store.ensureSeries(state.runs, state.keys);
    status.textContent = summary();
  } catch (e) {
    status.textContent = `Could not load: ${e.message}`;
  }
  draw();
  status.dataset.state = "ready";
}

const redraw = (fn) => (e) => { fn(e.target); draw(); };
el("run-filter").addEventListener("input", pickRuns);
el("x-mode").addEventListener("change", redraw((t) => { state.mode = t.value; }));
el("align-stage").addEventListener("change", redraw((t) => { state.stage = Number(t.value); }));
el("ema").addEventListener("input", redraw((t) => { state.ema = Number(t.value); el("ema-value").textContent = state.ema; }));
el("logy").addEventListener("change", redraw((t) => { state.logy = t.checked; }));
el("group-by").addEventListener("change", redraw((t) => { state.group = t.value; }));
el("group-param").addEventListener("change", redraw((t) => { state.param = t.value; }));
el("band").addEventListener("change", redraw((t) => { state.band = t.value; }));
pickRuns();
load();
