// The compare charts' Plotly traces and shapes from the runs' series (no DOM).
// x (``mode``): the global step; the step within each stage (every stage of every run drawn
// from 0, dashed by stage); the steps since the start of one stage k (every run's stage k
// starts at 0, what came before it at negative x); or the tokens seen (each stage's
// batch_size x seq_len per step, from the plan; a free-form run's from its config). Each
// run's stage boundaries are vertical lines in its colour. A fork's line is drawn in two
// parts, the points inherited from its ancestors muted (as on the run page), then its own.
// Grouped, each group is its mean with a band (±1 std or min-max) over its runs at common x,
// the runs themselves faint.

export const COLORS = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#3c4858", "#c0392b", "#27ae60"];
const BAND_POINTS = 800;
const LM = new Set(["causal_lm", "sft"]);

export function ema(values, alpha) {
  if (!alpha) return values;
  let m = null;
  return values.map((v) => (m = m === null ? v : alpha * m + (1 - alpha) * v));
}

function tokensPerStep(detail, i) {
  if (detail.plan) {
    const st = (detail.plan.stages || [])[i];
    if (!st || !LM.has(st.objective)) return null;
    return (st.batch_size || 16) * (st.seq_len || 64);
  }
  const c = detail.config || {};
  if (Number(c.tokens_per_step) > 0) return Number(c.tokens_per_step);
  return Number(c.batch_size) > 0 && Number(c.seq_len) > 0 ? c.batch_size * c.seq_len : null;
}

// step -> x for one run under the mode, or null when the run cannot be placed (it has no
// stage k, or no token count). The "stage" mode places each stage on its own (stagePieces).
export function xMapper(detail, { mode, stage }) {
  const stages = [...(detail.stages || [])].sort((a, b) => a.stage_index - b.stage_index);
  if (mode === "global" || mode === "stage") return (s) => s;
  if (mode === "from-stage") {
    const st = stages.find((x) => x.stage_index === stage);
    return st ? (s) => s - st.start_step : null;
  }
  const rates = stages.map((st) => tokensPerStep(detail, st.stage_index));
  if (!stages.length || rates.some((r) => r === null)) return null;
  const before = [0]; // tokens seen at each stage's start
  stages.forEach((st, i) => before.push(before[i] + (st.end_step - st.start_step) * rates[i]));
  return (s) => {
    let i = stages.findIndex((st) => s <= st.end_step);
    if (i < 0) i = stages.length - 1;
    return before[i] + (s - stages[i].start_step) * rates[i];
  };
}

// A line as (up to) two parts, inherited then own: [{inherited, steps, ys}].
function lineParts(s, ys) {
  const own = s.own_from_step === null || s.own_from_step === undefined ? -1 : s.steps.findIndex((st) => st >= s.own_from_step);
  const cut = own < 0 ? s.steps.length : own;
  return [
    { inherited: true, steps: s.steps.slice(0, cut), ys: ys.slice(0, cut) },
    { inherited: false, steps: s.steps.slice(cut), ys: ys.slice(cut) },
  ].filter((p) => p.steps.length);
}

const DASHES = ["solid", "dot", "dash", "longdash"];

// The parts of one stage, x = step within the stage, (start, end].
function stageParts(parts, st) {
  return parts.map((p) => {
    const q = { inherited: p.inherited, xs: [], ys: [] };
    p.steps.forEach((step, i) => { if (step > st.start_step && step <= st.end_step) { q.xs.push(step - st.start_step); q.ys.push(p.ys[i]); } });
    return q;
  }).filter((q) => q.xs.length);
}

// One run's line under the mode as pieces drawn alike ({piece, suffix, dash, parts: [{inherited,
// xs, ys}]}): one piece, or one per stage in the "stage" mode. [] when it cannot be placed.
export function runPieces(c, key, state) {
  const s = c.series.get(key);
  const x = xMapper(c.detail, state);
  if (!s || !s.steps.length || !x) return [];
  const parts = lineParts(s, ema(s.values, state.ema)); // EMA over the whole line: a fork's carries on from its history
  if (state.mode !== "stage") {
    return [{ piece: 0, suffix: "", dash: "solid", parts: parts.map((p) => ({ inherited: p.inherited, xs: p.steps.map(x), ys: p.ys })) }];
  }
  return [...c.detail.stages].sort((a, b) => a.stage_index - b.stage_index).map((st) => ({
    piece: st.stage_index, suffix: ` · ${st.name}`, dash: DASHES[st.stage_index % DASHES.length], parts: stageParts(parts, st),
  })).filter((p) => p.parts.length);
}

function runTrace(c, name, part, color, dash, alone) {
  const t = { x: part.xs, y: part.ys, name, mode: "lines", legendgroup: String(c.detail.id),
    meta: part.inherited ? "inherited" : "own", line: { color, dash, width: 1.8 } };
  if (!part.inherited) return t;
  return { ...t, name: `${name} (inherited)`, opacity: 0.45, showlegend: alone, line: { color, dash, width: 1.4 } };
}

export const runName = (c) => `#${c.detail.id} ${c.detail.name}`;

// Each run's stage boundaries (the starts of its stages after the first) as vertical lines;
// none in the "stage" mode, where every stage starts at 0.
// A stage's name labels the first of the lines drawn at the same x.
export function boundaryShapes(runs, state, colorOf) {
  const shapes = [];
  const labelled = new Set();
  runs.forEach((c, ri) => {
    const x = xMapper(c.detail, state);
    if (!x || state.mode === "stage") return;
    const stages = [...(c.detail.stages || [])].sort((a, b) => a.stage_index - b.stage_index);
    stages.slice(1).forEach((st) => {
      const at = x(st.start_step);
      const text = labelled.has(`${at} ${st.name}`) ? "" : st.name;
      labelled.add(`${at} ${st.name}`);
      shapes.push({
        type: "line", xref: "x", yref: "paper", x0: at, x1: at, y0: 0, y1: 1,
        name: `boundary run-${c.detail.id} stage-${st.stage_index}`, opacity: 0.6,
        line: { color: colorOf(c, ri), width: 1, dash: "dot" },
        label: { text, textangle: 0, textposition: "end", yanchor: "bottom", font: { size: 10, color: colorOf(c, ri) } },
      });
    });
  });
  return shapes;
}

function interpolator(xs, ys) {
  let j = 0;
  return (x) => { // x must not decrease between calls
    if (x < xs[0] || x > xs[xs.length - 1]) return null;
    while (j < xs.length - 1 && xs[j + 1] < x) j += 1;
    if (xs[j] === x || j === xs.length - 1) return ys[j];
    const t = (x - xs[j]) / (xs[j + 1] - xs[j]);
    return ys[j] + t * (ys[j + 1] - ys[j]);
  };
}

function grid(lines) {
  const all = [...new Set(lines.flatMap((l) => l.xs))].sort((a, b) => a - b);
  if (all.length <= BAND_POINTS) return all;
  const step = (all.length - 1) / (BAND_POINTS - 1);
  return Array.from({ length: BAND_POINTS }, (_, i) => all[Math.round(i * step)]);
}

// Mean and band of the member lines at common x (each member interpolated where it has points).
export function bandStats(lines, band) {
  const xs = grid(lines);
  const at = lines.map((l) => interpolator(l.xs, l.ys));
  const out = { x: [], mean: [], lo: [], hi: [], n: [] };
  for (const x of xs) {
    const vals = at.map((f) => f(x)).filter((v) => v !== null);
    if (!vals.length) continue;
    const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
    const sd = Math.sqrt(vals.reduce((a, b) => a + (b - mean) ** 2, 0) / vals.length);
    out.x.push(x); out.mean.push(mean); out.n.push(vals.length);
    out.lo.push(band === "minmax" ? Math.min(...vals) : mean - sd);
    out.hi.push(band === "minmax" ? Math.max(...vals) : mean + sd);
  }
  return out;
}

function rgba(hex, alpha) {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function bandTraces(lines, label, group, color, dash, band) {
  const st = bandStats(lines, band);
  const bandName = band === "minmax" ? "min–max" : "±1 std";
  const common = { mode: "lines", legendgroup: group, showlegend: false, hoverinfo: "skip" };
  return [
    { ...common, x: st.x, y: st.lo, line: { width: 0, color }, meta: "band-lower", name: `${label} low` },
    { ...common, x: st.x, y: st.hi, line: { width: 0, color }, fill: "tonexty", fillcolor: rgba(color, 0.2), meta: "band", name: `${label} ${bandName}` },
    { x: st.x, y: st.mean, mode: "lines", line: { color, dash, width: 2.4 }, legendgroup: group, meta: "mean",
      name: `${label} · mean of ${lines.length}`, customdata: st.n, hovertemplate: "%{y:.4g} (n=%{customdata})" },
  ];
}

// A group's runs faint, then per piece (one, or one per stage) its band and mean.
function groupTraces(g, gi, key, state) {
  const color = COLORS[gi % COLORS.length];
  const group = `group-${gi}`;
  const pieces = new Map(); // piece -> {suffix, dash, lines}
  const members = [];
  g.runs.forEach((c) => runPieces(c, key, state).forEach((p) => {
    const line = { xs: p.parts.flatMap((q) => q.xs), ys: p.parts.flatMap((q) => q.ys) };
    if (!pieces.has(p.piece)) pieces.set(p.piece, { suffix: p.suffix, dash: p.dash, lines: [] });
    pieces.get(p.piece).lines.push(line);
    members.push({ x: line.xs, y: line.ys, mode: "lines", name: runName(c) + p.suffix, legendgroup: group, showlegend: false,
      opacity: 0.25, meta: "member", line: { color, dash: p.dash, width: 1 }, hoverinfo: "skip" });
  }));
  const bands = [...pieces.values()].flatMap((p) => bandTraces(p.lines, g.label + p.suffix, group, color, p.dash, state.band));
  return [...members, ...bands];
}

// runs: the selected cache entries in selection order (colour by position); groups: from
// compare_config.groupRuns, or null.
export function traces(key, runs, groups, state) {
  if (groups) return groups.flatMap((g, gi) => groupTraces(g, gi, key, state));
  const out = [];
  runs.forEach((c, ri) => {
    const color = COLORS[ri % COLORS.length];
    runPieces(c, key, state).forEach((p) => p.parts.forEach((q) =>
      out.push(runTrace(c, runName(c) + p.suffix, q, color, p.dash, p.parts.length === 1))));
  });
  return out;
}
