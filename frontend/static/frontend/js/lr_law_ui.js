// Charts of the LR-annealing loss law L(s) = L0 + A·S1^(−α) − C·S2: a stage's observed training
// loss with the fitted curve, the extrapolation to the stage end and its ±2·RMS band (run page),
// and the loss predicted for another plan's schedule (pipeline editor's what-if box).
import { fmtNum, h } from "./dom.js";

const LAYOUT = { margin: { l: 55, r: 15, t: 30, b: 40 }, hovermode: "x unified", showlegend: true,
  legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" }, xaxis: { title: { text: "global step" } },
  yaxis: { title: { text: "training loss" } } };
const CONFIG = { responsive: true, displaylogo: false };

// Split the fit's grid at the last fitted step: the fitted part and the extrapolated part
// (which starts at the last fitted grid point so the two lines join).
export function splitFit(fit) {
  const lastFitted = fit.fitted_steps[1];
  let k = 0; // last grid index within the fitted range
  fit.steps.forEach((s, i) => { if (s <= lastFitted) k = i; });
  const part = (a, b) => fit.steps.slice(a, b);
  const fitted = { x: part(0, k + 1), y: fit.predicted.slice(0, k + 1) };
  const extra = k + 1 < fit.steps.length
    ? { x: part(k), y: fit.predicted.slice(k), lower: fit.lower.slice(k), upper: fit.upper.slice(k) }
    : { x: [], y: [], lower: [], upper: [] };
  return { fitted, extra };
}

// observed: {steps, values} of train/loss in the stage (may be downsampled).
export function drawLawFit(div, fit, observed) {
  const { fitted, extra } = splitFit(fit);
  const traces = [
    { x: observed.steps, y: observed.values, name: "observed", mode: "markers", type: "scatter",
      marker: { size: 4, color: "rgba(91,101,117,0.55)" }, meta: "observed" },
    { x: fitted.x, y: fitted.y, name: "fitted law", mode: "lines", type: "scatter",
      line: { color: "#2f6fde", width: 2 }, meta: "fit" },
  ];
  if (extra.x.length) {
    traces.push(
      { x: extra.x, y: extra.upper, mode: "lines", type: "scatter", line: { width: 0 }, hoverinfo: "skip",
        showlegend: false, meta: "band-upper" },
      { x: extra.x, y: extra.lower, mode: "lines", type: "scatter", line: { width: 0 }, fill: "tonexty",
        fillcolor: "rgba(228,87,46,0.15)", name: "±2·RMS", hoverinfo: "skip", meta: "band-lower" },
      { x: extra.x, y: extra.y, name: "extrapolation", mode: "lines", type: "scatter",
        line: { color: "#e4572e", width: 2, dash: "dash" }, meta: "extrapolation" });
  }
  Plotly.react(div, traces, { ...LAYOUT, uirevision: `stage-${fit.stage}` }, CONFIG);
}

export function clearChart(div) {
  Plotly.react(div, [], LAYOUT, CONFIG);
}

// A definition list of the fitted parameters and the predicted final loss.
export function lawParams(fit) {
  const p = fit.params;
  const item = (label, value, title) => h("div", { class: "metric", title }, h("dt", {}, label), h("dd", { class: "num" }, value));
  return [
    item("L0", fmtNum(p.L0), "irreducible loss"),
    item("A", fmtNum(p.A), "scale of the S1 (forward area) term"),
    item("α", fmtNum(p.alpha), "exponent of S1"),
    item("C", fmtNum(p.C), "annealing-area coefficient"),
    item("λ", fmtNum(p.lam ?? null), "momentum of the annealing area S2, fitted with the other parameters"),
    item("RMS", fmtNum(fit.rms), `residual RMS over ${fit.points} points (steps ${fit.fitted_steps[0]}–${fit.fitted_steps[1]})`),
    item(`final loss @ ${fit.final_step}`, `${fmtNum(fit.final_loss)} ± ${fmtNum(2 * fit.rms, 2)}`, "predicted at the stage end, ±2·RMS"),
  ];
}

// What-if: the loss predicted for the edited plan (and, for reference, the run it was fitted on).
export function drawWhatIf(div, r, reference) {
  const traces = [];
  if (reference && reference.steps.length) {
    traces.push({ x: reference.steps, y: reference.values, name: reference.name, mode: "lines", type: "scatter",
      line: { color: "rgba(91,101,117,0.6)", width: 1.2 }, meta: "reference" });
  }
  traces.push({ x: r.steps, y: r.predicted, name: "predicted (this plan)", mode: "lines", type: "scatter",
    line: { color: "#e4572e", width: 2 }, meta: "predicted" });
  Plotly.react(div, traces, { ...LAYOUT, yaxis: { title: { text: "predicted loss" } } }, CONFIG);
}
