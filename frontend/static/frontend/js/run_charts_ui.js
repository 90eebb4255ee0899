// Plotly charts of the run page. A chart keeps each key's line as read (global steps, values,
// and min/max per bucket when downsampled) and draws it in the chart's view: x axis (global
// step, tokens seen, wall time, step within stage: run_axes.js), EMA smoothing restarting at
// stage boundaries, log y (traces from run_traces.js). Stage bands and boundary lines are
// layout shapes; the run's events are markers on the first curve and, on a chart with a lane,
// a row of glyphs under it. New points are appended with Plotly.extendTraces (one call per
// animation frame); a change of view or of a line redraws with Plotly.react.
import { laneLayout, laneTraces, markerTrace } from "./run_events_ui.js";
import { lineTraces, PALETTE, prefixTraces } from "./run_traces.js";

const STAGE_FILL = ["rgba(47,111,222,0.06)", "rgba(228,87,46,0.06)", "rgba(23,163,152,0.07)", "rgba(243,167,18,0.08)"];

const GROW_COLOR = "#8e44ad";

// Stage bands, boundary lines (named boundary-i) and stage names; toX maps a step to x. A
// stage with a `grow` label (the model grown at its start) gets its boundary in GROW_COLOR and
// the label beside it (an annotation named grow-i).
export function stageShapes(stages, toX = (s) => s) {
  const shapes = [];
  const annotations = [];
  stages.forEach((st, i) => {
    const x0 = toX(st.start_step);
    const x1 = toX(st.end_step);
    shapes.push({ type: "rect", xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1,
      fillcolor: STAGE_FILL[i % STAGE_FILL.length], line: { width: 0 }, layer: "below" });
    if (i < stages.length - 1) {
      const color = stages[i + 1].grow ? GROW_COLOR : "#5b6575";
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: x1, x1, y0: 0, y1: 1,
        line: { color, width: 1.5, dash: "dash" }, name: `boundary-${i}` });
    }
    annotations.push({ xref: "x", yref: "paper", x: toX((st.start_step + st.end_step) / 2), y: 1.02,
      text: st.name, showarrow: false, font: { size: 11, color: "#5b6575" }, yanchor: "bottom" });
    if (st.grow) {
      annotations.push({ xref: "x", yref: "paper", x: x0, y: 0.98, text: st.grow, showarrow: false,
        xanchor: "left", yanchor: "top", font: { size: 10, color: GROW_COLOR }, name: `grow-${i}` });
    }
  });
  return { shapes, annotations };
}

// y of a line at a step (the nearest point at or before it; else its first).
function valueAt(line, step) {
  if (!line || !line.steps.length) return null;
  let lo = 0;
  let hi = line.steps.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (line.steps[mid] <= step) lo = mid; else hi = mid - 1;
  }
  return line.values[lo];
}

export class LiveChart {
  // axes: the page's RunAxes; lane: draw the events lane under this chart.
  constructor(div, { ytitle = "", logy = false, label = (k) => k, height, axes, lane = false } = {}) {
    this.div = div;
    this.axes = axes;
    this.lane = lane;
    this.ytitle = ytitle;
    this.height = height;
    this.label = label;
    this.view = { x: "step", smooth: 0, logy };
    this.lines = new Map(); // key -> {steps, values, min?, max?} (global steps)
    this.prefix = new Map(); // key -> {steps, values, parentId}: a fork's inherited points
    this.index = new Map(); // key -> index in div.data of its (last) line trace
    this.extend = new Map(); // key -> {line, raw, ema}: what appending continues
    this.colors = new Map();
    this.pending = new Map(); // key -> {steps, values} not drawn yet
    this.stages = [];
    this.events = [];
    this.extraAnnotations = [];
    this.zoomed = false;
    this.dirty = true;
    this.scheduled = false;
    Plotly.newPlot(div, [], this._layout(), { responsive: true, displaylogo: false });
    div.on("plotly_click", (ev) => {
      const url = ev.points && ev.points[0] && ev.points[0].customdata;
      if (typeof url === "string" && url.startsWith("/runs/")) window.location.href = url;
    });
  }

  _color(key) {
    if (!this.colors.has(key)) this.colors.set(key, PALETTE[this.colors.size % PALETTE.length]);
    return this.colors.get(key);
  }

  _style(key) {
    return { color: this._color(key), label: this.label(key), stageName: (i) => (this.stages[i] ? this.stages[i].name : `stage ${i}`) };
  }

  _toX() { return (s) => this.axes.toX(this.view.x, s); }

  _layout() {
    const toX = this._toX();
    const staged = this.view.x === "stage";
    const st = staged ? { shapes: [], annotations: [] } : stageShapes(this.stages, toX);
    const anns = this.extraAnnotations.map((a) => ({ ...a, x: toX(a.x) }));
    const layout = {
      margin: { l: 55, r: 15, t: 28, b: 40 }, hovermode: "x unified", showlegend: true,
      legend: { orientation: "h", y: -0.18 }, uirevision: this.view.x,
      xaxis: { title: { text: this.axes.title(this.view.x) }, type: this.view.x === "time" ? "date" : "linear" },
      yaxis: { title: { text: this.ytitle }, type: this.view.logy ? "log" : "linear" },
      shapes: st.shapes, annotations: [...st.annotations, ...anns],
    };
    if (this.lane) {
      layout.yaxis.domain = [0.3, 1];
      layout.yaxis2 = laneLayout();
      layout.xaxis.anchor = "y2";
    }
    if (this.height) layout.height = this.height;
    return layout;
  }

  _traces() {
    const traces = [];
    for (const [key, p] of this.prefix) traces.push(...prefixTraces(key, p, this.view, this.axes, this._style(key)));
    this.index.clear();
    this.extend.clear();
    for (const [key, line] of this.lines) {
      const { traces: own, ema } = lineTraces(key, line, this.view, this.axes, this._style(key));
      const base = traces.length;
      traces.push(...own);
      const last = own.map((t) => t.meta).lastIndexOf(key);
      const raw = own.map((t) => t.meta).lastIndexOf(`raw:${key}`);
      this.index.set(key, base + last);
      this.extend.set(key, { line: base + last, raw: raw < 0 ? null : base + raw, ema, stage: this.axes.stageOf(line.steps[line.steps.length - 1] ?? 0) });
    }
    const first = this.lines.values().next().value;
    const marks = markerTrace(this.events, this._toX(), (s) => valueAt(first, s));
    if (marks) traces.push(marks);
    if (this.lane) traces.push(...laneTraces(this.events, this._toX()));
    return traces;
  }

  render() {
    this.dirty = false;
    this.pending.clear();
    Plotly.react(this.div, this._traces(), this._layout(), { responsive: true, displaylogo: false });
  }

  _schedule(dirty) {
    if (dirty) this.dirty = true;
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => this.flush());
  }

  // Replace a key's line (a full read, a zoom window): {steps, values, min?, max?}.
  setLine(key, s) {
    this.lines.set(key, { steps: s.steps.slice(), values: s.values.slice(),
      min: s.min ? s.min.slice() : null, max: s.max ? s.max.slice() : null });
    this._schedule(true);
  }

  setSeries(key, steps, values) { this.setLine(key, { steps, values }); }

  // A fork's shared prefix: the parent's points up to the fork step, drawn muted.
  addParentPrefix(key, steps, values, parentId) {
    if (this.prefix.has(key) || !steps.length) return;
    this.prefix.set(key, { steps: steps.slice(), values: values.slice(), parentId });
    this._schedule(true);
  }

  // New points after the line's last (deduped by run_series.js): drawn on the next frame.
  append(key, steps, values) {
    if (!steps.length) return;
    if (!this.lines.has(key)) this.lines.set(key, { steps: [], values: [], min: null, max: null });
    const line = this.lines.get(key);
    line.steps.push(...steps);
    line.values.push(...values);
    const p = this.pending.get(key) || { steps: [], values: [] };
    p.steps.push(...steps);
    p.values.push(...values);
    this.pending.set(key, p);
    this._schedule(!this.extend.has(key));
  }

  flush() {
    this.scheduled = false;
    const staged = this.view.x === "stage";
    const crosses = [...this.pending].some(([key, p]) => staged && p.steps.some((s) => this.axes.stageOf(s) !== this.extend.get(key)?.stage));
    if (this.dirty || crosses) { this.render(); return; }
    if (!this.pending.size) return;
    const xs = [], ys = [], idx = [];
    const toX = this._toX();
    for (const [key, p] of this.pending) {
      const ex = this.extend.get(key);
      xs.push(p.steps.map(toX));
      ys.push(p.values.map((v, i) => ex.ema.push(p.steps[i], v)));
      idx.push(ex.line);
      if (ex.raw !== null) { xs.push(p.steps.map(toX)); ys.push(p.values.slice()); idx.push(ex.raw); }
    }
    this.pending.clear();
    Plotly.extendTraces(this.div, { x: xs, y: ys }, idx);
  }

  // Points drawn for a key (its own line traces; the envelope and prefix not counted).
  pointCount(key) {
    return (this.div.data || []).filter((t) => t.meta === key).reduce((n, t) => n + t.x.length, 0);
  }

  setStages(stages) { this.stages = stages; this._schedule(true); }

  setAnnotations(anns) { this.extraAnnotations = anns; this._schedule(true); }

  setEvents(events) { this.events = events; this._schedule(true); }

  // patch: {x?, smooth?, logy?}. A new x axis drops a zoom window (the whole run is re-read).
  setView(patch) {
    const reread = patch.x !== undefined && patch.x !== this.view.x && this.zoomed;
    this.view = { ...this.view, ...patch };
    this._schedule(true);
    if (reread) { this.zoomed = false; this.zoomCb?.(null); }
  }

  setLogY(on) { this.setView({ logy: on }); }

  // cb([lo, hi]) in global steps on a zoom, cb(null) on a reset to autorange. With x = step
  // within stage a window has no single step range: the zoom stays on the points drawn.
  onZoom(cb) {
    this.zoomCb = cb;
    this.div.on("plotly_relayout", (ev) => {
      if (ev["xaxis.range[0]"] !== undefined) {
        const lo = this.axes.fromX(this.view.x, ev["xaxis.range[0]"]);
        const hi = this.axes.fromX(this.view.x, ev["xaxis.range[1]"]);
        if (lo === null || hi === null) return;
        this.zoomed = true;
        cb([Math.max(0, Math.floor(lo)), Math.max(0, Math.ceil(hi))]);
      } else if (ev["xaxis.autorange"]) {
        this.zoomed = false;
        cb(null);
      }
    });
  }

  keys() { return [...this.lines.keys()]; }

  clear() {
    this.lines.clear();
    this.prefix.clear();
    this._schedule(true);
  }
}

export function heatmap(div, m) {
  const z = m.values.map((row) => row.map((v) => (v === null ? null : v)));
  const text = z.map((row) => row.map((v) => (v === null ? "" : Number(v).toPrecision(3))));
  Plotly.react(div, [{ type: "heatmap", z, x: m.eval_sets, y: m.stages, text, texttemplate: "%{text}",
    colorscale: "Viridis", reversescale: !m.higher_is_better,
    hovertemplate: "after %{y}<br>eval %{x}: %{z:.4f}<extra></extra>" }],
  { margin: { l: 90, r: 10, t: 10, b: 50 }, xaxis: { title: { text: `eval set (${m.metric})` } },
    yaxis: { title: { text: "end of stage" }, autorange: "reversed" } },
  { responsive: true, displaylogo: false });
}
