// The run page's Plotly traces of one series key (no DOM): the line on the chosen x axis
// (run_axes.js), EMA-smoothed with the average restarting at every stage boundary (so it never
// blurs a stability gap into the stage before it), the min/max envelope as a filled band
// wherever the line is downsampled (the series API's `min`/`max` per bucket), the raw line
// faintly under a smoothed one, and with x = step within stage one line per stage.
//
// Trace `meta` names what a trace is (read by the browser tests): the key for its line,
// `band-lo:<key>` / `band-hi:<key>` for the envelope, `raw:<key>` for the unsmoothed line,
// `parent:<key>` for a fork's inherited prefix.

export const PALETTE = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#3c4858", "#c0392b", "#27ae60"];
const DASHES = ["solid", "dot", "dash", "longdash"];

// Debiased EMA of a stream of points that starts over at every new stage.
export class StageEma {
  constructor(alpha, stageOf) {
    this.alpha = alpha;
    this.stageOf = stageOf;
    this.stage = null;
    this.m = 0;
    this.n = 0;
  }

  push(step, v) {
    if (!this.alpha) return v;
    const s = this.stageOf(step);
    if (s !== this.stage) { this.stage = s; this.m = 0; this.n = 0; }
    this.m = this.alpha * this.m + (1 - this.alpha) * v;
    this.n += 1;
    return this.m / (1 - this.alpha ** this.n);
  }
}

export function withAlpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

// Index ranges [lo, hi) of the points of each stage (x = step within stage), else one range.
function segments(steps, axes, mode) {
  if (mode !== "stage" || !steps.length) return [{ lo: 0, hi: steps.length, stage: null }];
  const out = [];
  let lo = 0;
  for (let i = 1; i <= steps.length; i += 1) {
    if (i === steps.length || axes.stageOf(steps[i]) !== axes.stageOf(steps[lo])) {
      out.push({ lo, hi: i, stage: axes.stageOf(steps[lo]) });
      lo = i;
    }
  }
  return out;
}

function bandTraces(key, line, xs, seg, color) {
  const hi = Math.min(seg.hi, line.min.length);
  if (hi <= seg.lo) return [];
  const x = xs.slice(seg.lo, hi);
  const common = { x, mode: "lines", type: "scatter", line: { width: 0, color }, showlegend: false,
    hoverinfo: "skip", legendgroup: key };
  return [
    { ...common, y: line.min.slice(seg.lo, hi), meta: `band-lo:${key}` },
    { ...common, y: line.max.slice(seg.lo, hi), meta: `band-hi:${key}`, fill: "tonexty", fillcolor: withAlpha(color, 0.2) },
  ];
}

// The traces of one key's own line, and the smoother left at its last point (to extend it).
// style: {color, label, stageName(i)}.
export function lineTraces(key, line, view, axes, style) {
  const ema = new StageEma(view.smooth, (s) => axes.stageOf(s));
  const ys = line.values.map((v, i) => ema.push(line.steps[i], v));
  const xs = line.steps.map((s) => axes.toX(view.x, s));
  const traces = [];
  for (const seg of segments(line.steps, axes, view.x)) {
    const x = xs.slice(seg.lo, seg.hi);
    const staged = seg.stage !== null;
    if (line.min && line.max) traces.push(...bandTraces(key, line, xs, seg, style.color));
    if (view.smooth) {
      traces.push({ x, y: line.values.slice(seg.lo, seg.hi), mode: "lines", type: "scatter", meta: `raw:${key}`,
        line: { color: style.color, width: 1 }, opacity: 0.3, showlegend: false, hoverinfo: "skip", legendgroup: key });
    }
    traces.push({ x, y: ys.slice(seg.lo, seg.hi), mode: "lines", type: "scatter", meta: key, legendgroup: key,
      name: staged ? `${style.label} · ${style.stageName(seg.stage)}` : style.label,
      line: { color: style.color, width: 1.6, dash: staged ? DASHES[seg.stage % DASHES.length] : "solid" } });
  }
  return { traces, ema };
}

// A fork's inherited prefix (the parent's points up to the fork step), muted and static.
export function prefixTraces(key, p, view, axes, style) {
  const group = `parent #${p.parentId}`;
  const ema = new StageEma(view.smooth, (s) => axes.stageOf(s));
  const ys = p.values.map((v, i) => ema.push(p.steps[i], v));
  return segments(p.steps, axes, view.x).map((seg) => ({
    x: p.steps.slice(seg.lo, seg.hi).map((s) => axes.toX(view.x, s)), y: ys.slice(seg.lo, seg.hi),
    type: "scatter", mode: "lines", name: `${style.label} (${group})`, legendgroup: group, opacity: 0.4,
    line: { color: style.color, width: 1.4 }, meta: `parent:${key}`, hovertemplate: `${group}: %{y}<extra></extra>` }));
}
