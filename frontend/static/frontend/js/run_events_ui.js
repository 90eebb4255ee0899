// The run's events (GET /api/runs/{id}/events/): stage starts and ends, checkpoints, requeues
// and resumes with the attempt, divergence, failure, cancel, forks taken from the run. Drawn
// three ways: an events lane under the training-loss chart (one row per kind of event, on the
// chart's x axis), markers on the curves, and a list. Also the run's forks as links and a
// failed run's error with its traceback. User text only ever goes through textContent.
import { fmtTime, h, replaceChildren } from "./dom.js";

// kind -> lane row, marker symbol, colour
const STYLE = {
  stage_start: ["stages", "triangle-right", "#3c4858"],
  stage_end: ["stages", "triangle-left", "#16a34a"],
  checkpoint: ["checkpoints", "diamond", "#2f6fde"],
  requeue: ["workers", "x", "#b45309"],
  resume: ["workers", "circle", "#0e7490"],
  fork: ["forks", "star", "#8e44ad"],
  divergence: ["problems", "hexagram", "#b42318"],
  failed: ["problems", "x-thin-open", "#b42318"],
  cancel: ["problems", "square", "#6b7280"],
};
export const LANE_ROWS = ["problems", "forks", "workers", "checkpoints", "stages"];

export function eventText(e) {
  const at = e.step === null ? "" : ` at step ${e.step}`;
  switch (e.kind) {
    case "stage_start": return `stage ${e.name} started`;
    case "stage_end": return `stage ${e.name} finished`;
    case "checkpoint": return `checkpoint${at}${e.stage_end ? " (stage end)" : ""}`;
    case "requeue": return `worker lost on attempt ${e.attempt}${e.step === null ? " (step not recorded)" : at}: back in the queue` +
      (e.resume_step === null || e.resume_step === undefined ? "" : `, resumes from step ${e.resume_step}`);
    case "resume": return `resumed on attempt ${e.attempt}${e.step === null ? "" : ` from step ${e.step}`}`;
    case "divergence": return `diverged${at}: ${e.metric} became ${e.value}`;
    case "failed": return `failed${at}: ${(e.error || "").slice(0, 200)}`;
    case "cancel": return `canceled${at}`;
    case "fork": return `fork #${e.run} ${e.name}${at}`;
    default: return `${e.kind}${at}`;
  }
}

const placed = (events) => events.filter((e) => e.step !== null && e.step !== undefined && STYLE[e.kind]);

// One marker trace on a chart's curve: y from yAt(step) (the chart's first line).
export function markerTrace(events, toX, yAt) {
  const ev = placed(events).map((e) => ({ e, y: yAt(e.step) })).filter((p) => p.y !== null && p.y !== undefined);
  if (!ev.length) return null;
  return { x: ev.map((p) => toX(p.e.step)), y: ev.map((p) => p.y), type: "scatter", mode: "markers", name: "events",
    meta: "events", text: ev.map((p) => eventText(p.e)), hovertemplate: "%{text}<extra></extra>",
    marker: { size: 9, symbol: ev.map((p) => STYLE[p.e.kind][1]), color: ev.map((p) => STYLE[p.e.kind][2]),
      line: { width: 1, color: "#fff" } } };
}

// The lane: one trace per kind on the y2 axis (meta `lane:<kind>`); a fork links to its run.
export function laneTraces(events, toX) {
  const byKind = new Map();
  for (const e of placed(events)) {
    if (!byKind.has(e.kind)) byKind.set(e.kind, []);
    byKind.get(e.kind).push(e);
  }
  return [...byKind].map(([kind, list]) => ({
    x: list.map((e) => toX(e.step)), y: list.map(() => STYLE[kind][0]), yaxis: "y2", type: "scatter", mode: "markers",
    meta: `lane:${kind}`, showlegend: false, text: list.map(eventText), hovertemplate: "%{text}<extra></extra>",
    customdata: list.map((e) => (e.kind === "fork" ? `/runs/${e.run}/` : "")),
    marker: { size: 11, symbol: STYLE[kind][1], color: STYLE[kind][2], line: { width: 1, color: "#fff" } } }));
}

export function laneLayout() {
  return { domain: [0, 0.2], type: "category", categoryorder: "array", categoryarray: LANE_ROWS, range: [-0.5, LANE_ROWS.length - 0.5],
    fixedrange: true, showgrid: false, zeroline: false, tickfont: { size: 9, color: "#5b6575" } };
}

export function renderEventList(ol, events) {
  replaceChildren(ol, events.map((e) => h("li", { class: `event-${e.kind}`, dataset: { kind: e.kind, step: e.step ?? "" } },
    h("span", { class: "event-dot", style: `color:${(STYLE[e.kind] || [0, 0, "#5b6575"])[2]}` }, "●"), " ",
    e.kind === "fork" ? h("a", { href: `/runs/${e.run}/` }, eventText(e)) : eventText(e),
    e.time ? h("time", { datetime: e.time }, ` ${fmtTime(e.time)}`) : "")));
}

export function renderForks(el, forks) {
  el.hidden = !forks.length;
  replaceChildren(el.querySelector("ul"), forks.map((f) => h("li", { dataset: { run: f.id } },
    h("a", { href: `/runs/${f.id}/` }, `${f.name} #${f.id}`), " ",
    h("span", { class: `badge state-${f.state}` }, f.state),
    f.step === null ? "" : h("span", { class: "muted" }, ` from step ${f.step}`))));
}

// A failed run: its error and traceback, in place of charts that have nothing to show.
export function renderFailure(el, failure) {
  el.hidden = !failure;
  if (!failure) return;
  el.querySelector("[data-role=where]").textContent = failure.name === null ? "the run failed" : `stage ${failure.name} failed`;
  el.querySelector("[data-role=error]").textContent = failure.error || "(no error message)";
  const tb = el.querySelector("[data-role=traceback]");
  tb.hidden = !failure.traceback;
  tb.querySelector("pre").textContent = failure.traceback || "";
}
