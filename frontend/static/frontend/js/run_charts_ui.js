// Plotly charts on the global step axis: one trace per series key, stage bands and boundary
// lines as layout shapes, new points appended with Plotly.extendTraces (never a full redraw).

const PALETTE = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#3c4858", "#c0392b", "#27ae60"];
const STAGE_FILL = ["rgba(47,111,222,0.06)", "rgba(228,87,46,0.06)", "rgba(23,163,152,0.07)", "rgba(243,167,18,0.08)"];

export function stageShapes(stages) {
  const shapes = [];
  const annotations = [];
  stages.forEach((st, i) => {
    shapes.push({ type: "rect", xref: "x", yref: "paper", x0: st.start_step, x1: st.end_step, y0: 0, y1: 1,
      fillcolor: STAGE_FILL[i % STAGE_FILL.length], line: { width: 0 }, layer: "below" });
    if (i < stages.length - 1) {
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: st.end_step, x1: st.end_step, y0: 0, y1: 1,
        line: { color: "#5b6575", width: 1.5, dash: "dash" }, name: `boundary-${i}` });
    }
    annotations.push({ xref: "x", yref: "paper", x: (st.start_step + st.end_step) / 2, y: 1.02,
      text: st.name, showarrow: false, font: { size: 11, color: "#5b6575" }, yanchor: "bottom" });
  });
  return { shapes, annotations };
}

export class LiveChart {
  constructor(div, { ytitle = "", logy = false, label = (k) => k, height } = {}) {
    this.div = div;
    this.index = new Map(); // key -> trace index (the run's own, live traces only)
    this.colors = new Map(); // key -> colour, shared by a key's live and parent-prefix traces
    this.prefixKeys = new Set(); // keys with a parent-prefix trace (static, never extended)
    this.pending = new Map(); // key -> {x: [], y: []}
    this.label = label;
    this.stageLayout = { shapes: [], annotations: [] };
    this.extraAnnotations = [];
    this.zoomed = false;
    this.scheduled = false;
    const layout = {
      margin: { l: 55, r: 15, t: 28, b: 40 }, hovermode: "x unified", showlegend: true,
      legend: { orientation: "h", y: -0.18 }, xaxis: { title: { text: "global step" } },
      yaxis: { title: { text: ytitle }, type: logy ? "log" : "linear" }, uirevision: "keep",
    };
    if (height) layout.height = height;
    Plotly.newPlot(div, [], layout, { responsive: true, displaylogo: false });
  }

  _color(key) {
    if (!this.colors.has(key)) this.colors.set(key, PALETTE[this.colors.size % PALETTE.length]);
    return this.colors.get(key);
  }

  _trace(key) {
    if (!this.index.has(key)) {
      const i = this.div.data.length; // after any parent-prefix traces already drawn
      this.index.set(key, i);
      Plotly.addTraces(this.div, { x: [], y: [], name: this.label(key), mode: "lines", type: "scatter",
        line: { color: this._color(key), width: 1.6 }, meta: key });
    }
    return this.index.get(key);
  }

  // A fork's shared prefix: the parent's points up to the fork step, drawn once as a muted,
  // static trace. It is not in `index`, so setSeries/append/zoom never touch it.
  addParentPrefix(key, steps, values, parentId) {
    if (this.prefixKeys.has(key) || !steps.length) return;
    this.prefixKeys.add(key);
    const group = `parent #${parentId}`;
    Plotly.addTraces(this.div, { x: steps.slice(), y: values.slice(), type: "scatter", mode: "lines",
      name: `${this.label(key)} (${group})`, legendgroup: group, opacity: 0.4,
      line: { color: this._color(key), width: 1.4 }, meta: `parent:${key}`,
      hovertemplate: `${group}: %{y}<extra></extra>` });
  }

  // Replace a trace's points (initial load, zoom window).
  setSeries(key, steps, values) {
    const i = this._trace(key);
    this.pending.delete(key);
    Plotly.restyle(this.div, { x: [steps.slice()], y: [values.slice()] }, [i]);
  }

  // Queue points for the next animation frame; many socket batches become one extendTraces.
  append(key, steps, values) {
    if (!steps.length) return;
    this._trace(key);
    const p = this.pending.get(key) || { x: [], y: [] };
    p.x.push(...steps);
    p.y.push(...values);
    this.pending.set(key, p);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.scheduled = false;
    if (!this.pending.size) return;
    const xs = [], ys = [], idx = [];
    for (const [key, p] of this.pending) {
      xs.push(p.x); ys.push(p.y); idx.push(this.index.get(key));
    }
    this.pending.clear();
    Plotly.extendTraces(this.div, { x: xs, y: ys }, idx);
  }

  pointCount(key) {
    const i = this.index.get(key);
    return i === undefined ? 0 : this.div.data[i].x.length;
  }

  _relayoutAnnotations() {
    Plotly.relayout(this.div, { shapes: this.stageLayout.shapes,
      annotations: [...this.stageLayout.annotations, ...this.extraAnnotations] });
  }

  setStages(stages) {
    this.stageLayout = stageShapes(stages);
    this._relayoutAnnotations();
  }

  setAnnotations(anns) {
    this.extraAnnotations = anns;
    this._relayoutAnnotations();
  }

  setLogY(on) { Plotly.relayout(this.div, { "yaxis.type": on ? "log" : "linear" }); }

  // cb([lo, hi]) on a zoom, cb(null) on a reset to autorange.
  onZoom(cb) {
    this.div.on("plotly_relayout", (ev) => {
      if (ev["xaxis.range[0]"] !== undefined) {
        this.zoomed = true;
        cb([Math.max(0, Math.floor(ev["xaxis.range[0]"])), Math.ceil(ev["xaxis.range[1]"])]);
      } else if (ev["xaxis.autorange"]) {
        this.zoomed = false;
        cb(null);
      }
    });
  }

  keys() { return [...this.index.keys()]; }
}

export function heatmap(div, m) {
  const z = m.values.map((row) => row.map((v) => (v === null ? null : v)));
  const text = z.map((row) => row.map((v) => (v === null ? "" : Number(v).toPrecision(3))));
  Plotly.react(div, [{ type: "heatmap", z, x: m.eval_sets, y: m.stages, text, texttemplate: "%{text}",
    colorscale: m.higher_is_better ? "Viridis" : "Viridis", reversescale: !m.higher_is_better,
    hovertemplate: "after %{y}<br>eval %{x}: %{z:.4f}<extra></extra>" }],
  { margin: { l: 90, r: 10, t: 10, b: 50 }, xaxis: { title: { text: `eval set (${m.metric})` } },
    yaxis: { title: { text: "end of stage" }, autorange: "reversed" } },
  { responsive: true, displaylogo: false });
}
