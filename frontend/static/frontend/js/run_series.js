// The run page's series: the first full read, the socket's point batches appended exactly once
// (SeriesStore dedupes by step), and a catch-up from the REST API (`after_step`) whenever a
// batch shows a gap or the socket reconnects. While a read is in flight, socket messages wait
// and are replayed after it, in order. Zoom windows and a fork's parent prefix are read here
// too; the charts (run_charts_ui.js) only draw. A downsampled read keeps its min/max per bucket
// (the charts draw them as an envelope); a zoom window small enough comes back raw.
import { getJSON } from "./api.js";
import { SeriesStore } from "./run_store.js";

const MAX_AFTER = 50000;

export class RunSeries {
  // chartFor(key): the chart that draws a key (or null); dispatch(msg): a message once its
  // points are drawn (run.points) or as it comes (anything else); onKeys(keys): the run's
  // keys, before the first read draws them.
  constructor(runId, { chartFor, dispatch, onError, onKeys = () => {} }) {
    this.base = `/api/runs/${runId}`;
    this.store = new SeriesStore();
    this.chartFor = chartFor;
    this.dispatch = dispatch;
    this.onError = onError;
    this.onKeys = onKeys;
    this.syncing = false;
    this.buffered = [];
  }

  keys() { return this.store.keys(); }

  draw(key, steps, values) {
    const fresh = this.store.merge(key, steps, values);
    const chart = this.chartFor(key);
    if (chart && fresh.steps.length) chart.append(key, fresh.steps, fresh.values);
  }

  async fullLoad() {
    const { keys } = await getJSON(`${this.base}/metrics/`);
    this.onKeys(keys);
    if (!keys.length) return;
    const { series } = await getJSON(`${this.base}/series/?keys=${encodeURIComponent(keys.join(","))}&max_points=2000`);
    for (const [key, s] of Object.entries(series)) {
      this.store.reset(key, s.steps);
      this.chartFor(key)?.setLine(key, s);
    }
  }

  async catchUp(keys = this.store.keys()) {
    for (const key of keys) {
      for (;;) {
        const after = this.store.lastStep(key);
        const s = (await getJSON(`${this.base}/series/?keys=${encodeURIComponent(key)}&after_step=${after}`)).series[key];
        this.draw(key, s.steps, s.values);
        if (s.steps.length < MAX_AFTER) break;
      }
    }
  }

  // Run fn while socket messages wait in `buffered`; afterwards replay them (dedupe by step).
  async sync(fn) {
    this.syncing = true;
    try { await fn(); } catch (e) { this.onError(e); }
    this.syncing = false;
    const queued = this.buffered;
    this.buffered = [];
    queued.forEach((m) => this.receive(m));
  }

  receive(msg) {
    if (this.syncing) { this.buffered.push(msg); return; }
    if (msg.type !== "run.points") { this.dispatch(msg); return; }
    const gaps = Object.entries(msg.series)
      .filter(([key, s]) => s.steps.length && this.store.gapBefore(key, Math.min(...s.steps)))
      .map(([key]) => key);
    if (gaps.length) {
      this.buffered.push(msg);
      this.sync(() => this.catchUp(gaps));
      return;
    }
    for (const [key, s] of Object.entries(msg.series)) this.draw(key, s.steps, s.values);
    this.dispatch(msg);
  }

  // Replace the given keys' traces on `chart` from a fresh read (a zoom window when `range`
  // is [lo, hi], the whole run otherwise).
  async reload(chart, keys, { range = null, maxPoints = 1000 } = {}) {
    if (!keys.length) return;
    let url = `${this.base}/series/?keys=${encodeURIComponent(keys.join(","))}&max_points=${maxPoints}`;
    if (range) url += `&min_step=${range[0]}&max_step=${range[1]}`;
    try {
      const { series } = await getJSON(url);
      for (const [key, s] of Object.entries(series)) chart.setLine(key, s);
    } catch (e) { this.onError(e); }
  }
}

// A fork stores only points after its fork step: its parent's points up to that step, of the
// keys `wanted` accepts, as key -> {steps, values} (null for a run that is not a fork). They
// live outside the store, so dedupe and catch-up never see them.
export async function parentPrefix(parent, forkStep, wanted) {
  if (!parent || forkStep === null || forkStep === undefined) return null;
  const pbase = `/api/runs/${parent}`;
  const keys = (await getJSON(`${pbase}/metrics/`)).keys.filter(wanted);
  if (!keys.length) return null;
  const q = encodeURIComponent(keys.join(","));
  const { series } = await getJSON(`${pbase}/series/?keys=${q}&max_step=${forkStep}&max_points=1000`);
  const out = {};
  for (const [key, s] of Object.entries(series)) {
    const n = s.steps.filter((st) => st <= forkStep).length; // steps are sorted
    out[key] = { steps: s.steps.slice(0, n), values: s.values.slice(0, n) };
  }
  return out;
}
