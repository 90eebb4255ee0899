// The continual-learning analysis panel of the run page: ACC / BWT / FWT / average forgetting,
// min-ACC per task, avg-min-ACC and WC-ACC (accuracy runs) or the loss-forgetting matrix (loss
// runs). Input: the object of GET /api/runs/{id}/analysis/ or a socket batch's `analysis`.
import { fmtNum, h, replaceChildren } from "./dom.js";

const CARDS = [
  ["acc", "ACC", "average final value over the tasks seen (higher is better for accuracy, lower for loss)"],
  ["bwt", "BWT", "backward transfer: mean change on earlier tasks after training on later ones"],
  ["fwt", "FWT", "forward transfer: value on a task just before training on it, minus its step-0 baseline"],
  ["avg_forgetting", "Avg forgetting", "mean over earlier tasks of (largest value at an earlier stage end − final value)"],
];

function card(key, label, title, value) {
  return h("div", { class: "metric", dataset: { metric: key }, title },
    h("dt", {}, label), h("dd", { class: "num" }, fmtNum(value)));
}

export function renderAnalysis(root, a) {
  const q = (sel) => root.querySelector(sel);
  const m = a.metrics || {};
  q("[data-role=metric]").textContent = a.metric === "acc" ? "metric: accuracy" : "metric: eval loss";
  q("[data-role=inexact]").hidden = a.exact !== false;
  const cards = CARDS.map(([k, label, title]) => card(k, label, title, m[k]));
  if (a.metric === "acc") {
    cards.push(card("avg_min_acc", "Avg min-ACC", "mean over tasks of the lowest accuracy after their own stage", a.avg_min_acc));
    cards.push(card("wc_acc", "WC-ACC", "worst-case accuracy: mixes the current task's accuracy with the earlier tasks' min-ACC", a.wc_acc));
  }
  replaceChildren(q("[data-role=cards]"), cards);
  q("[data-role=no-metrics]").hidden = a.metrics !== null && a.metrics !== undefined;

  const perTask = q("[data-role=per-task]");
  const forgetting = m.forgetting_per_task || [];
  const rows = a.eval_sets.map((name, j) => h("tr", {},
    h("td", {}, name),
    h("td", { class: "num" }, fmtNum(a.matrix && a.matrix[j] ? a.matrix[j][j] : null)),
    h("td", { class: "num" }, fmtNum(forgetting[j] ?? null)),
    a.metric === "acc" ? h("td", { class: "num" }, fmtNum((a.min_acc_per_task || [])[j] ?? null)) : null));
  replaceChildren(q("[data-role=per-task-head]"), [h("tr", {}, h("th", {}, "Task (eval set)"),
    h("th", { class: "num" }, "after own stage"), h("th", { class: "num" }, "forgetting"),
    a.metric === "acc" ? h("th", { class: "num" }, "min-ACC") : null)]);
  replaceChildren(perTask, rows);

  const lf = q("[data-role=loss-forgetting]");
  lf.hidden = a.metric !== "loss" || !a.loss_forgetting;
  if (!lf.hidden) lossForgettingHeatmap(lf.querySelector(".chart"), a);
}

function stageLabels(a) {
  return a.boundaries.map((b, i) => `stage ${i + 1} (≤${b})`);
}

function lossForgettingHeatmap(div, a) {
  const z = a.loss_forgetting.map((row) => row.map((v) => (v === null ? null : v)));
  const text = z.map((row) => row.map((v) => (v === null ? "" : Number(v).toPrecision(3))));
  Plotly.react(div, [{ type: "heatmap", z, x: a.eval_sets, y: stageLabels(a), text, texttemplate: "%{text}",
    colorscale: "RdBu", zmid: 0, // Plotly's RdBu: blue low, red high (forgotten)
    hovertemplate: "after %{y}<br>%{x}: loss − best earlier = %{z:.4f}<extra></extra>" }],
  { margin: { l: 110, r: 10, t: 10, b: 50 }, xaxis: { title: { text: "eval set" } },
    yaxis: { title: { text: "end of stage" }, autorange: "reversed" } },
  { responsive: true, displaylogo: false });
}
