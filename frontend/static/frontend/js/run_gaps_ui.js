// The run page's stability-gap table (GET /api/ui/runs/{id}/analysis/, or a socket batch's
// `run_analysis`): per stage boundary, one row for each task learned before it whose eval
// metric dropped by more than the tolerance, then one line folding the rest ("2 tasks without
// a drop", "1 not measured yet"). Tasks not trained yet and the boundary's own new task are
// never listed (the server leaves them out).
import { fmtNum, h, replaceChildren } from "./dom.js";

const COLUMNS = 8;

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function gapRow(g) {
  return h("tr", { class: "dropped", dataset: { boundary: g.boundary_index, evalSet: g.eval_set } },
    h("td", {}, `${g.boundary_step} → ${g.stage_after}`), h("td", {}, g.eval_set), h("td", {}, g.metric),
    h("td", {}, fmtNum(g.reference_value)), h("td", {}, fmtNum(g.extreme_value)),
    h("td", { class: "num" }, fmtNum(g.drop_depth)), h("td", { class: "num" }, g.time_to_drop ?? "—"),
    h("td", { class: "num" }, g.time_to_recover ?? "not yet"));
}

function foldedRow(b) {
  const parts = [];
  if (b.without_drop) parts.push(`${plural(b.without_drop, "task")} without a drop (${b.without_drop_sets.join(", ")})`);
  if (b.not_measured.length) parts.push(`${b.not_measured.length} not measured yet (${b.not_measured.join(", ")})`);
  if (!parts.length) return null;
  return h("tr", { class: "folded muted", dataset: { boundary: b.boundary_index, role: "folded" } },
    h("td", {}, `${b.boundary_step} → ${b.stage_after}`), h("td", { colspan: COLUMNS - 1 }, parts.join(" · ")));
}

// Rows grouped by boundary, each group's drops first and its folded line last. Returns the drop
// rows (for the eval chart's annotations).
export function renderGapTable(tbody, emptyEl, a) {
  const boundaries = a.gap_boundaries || [];
  const drops = (a.gaps || []).filter((g) => g.extreme_step !== null);
  const rows = [];
  for (const b of boundaries) {
    rows.push(...drops.filter((g) => g.boundary_index === b.boundary_index).map(gapRow));
    rows.push(foldedRow(b));
  }
  const shown = rows.filter((r) => r !== null);
  replaceChildren(tbody, shown);
  emptyEl.hidden = shown.length > 0;
  return drops;
}

// The eval chart's markers: one per drop row of the chart's metric, at its worst point.
export function gapAnnotations(drops, metric) {
  return drops.filter((g) => g.dropped && g.metric === metric).map((g) => ({
    x: g.extreme_step, y: g.extreme_value, xref: "x", yref: "y", text: `gap ${fmtNum(g.drop_depth, 2)}`,
    showarrow: true, arrowhead: 2, ax: 0, ay: metric === "acc" ? 30 : -30, font: { size: 10 } }));
}
