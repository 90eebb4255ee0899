// Validation as you type: a debounced POST of the plan to /api/ui/plan-preview/ (the server's
// validation, nothing stored); every error at once in the list and next to its field, or the
// whole pipeline's LR curve drawn from the same answer.
import { errorLines, postJSON } from "./api.js";
import { showErrorList } from "./builder_errors.js";
import { stageShapes } from "./run_charts_ui.js";

const LAYOUT = { margin: { l: 60, r: 10, t: 24, b: 40 }, xaxis: { title: { text: "global step" } }, yaxis: { title: { text: "lr" } } };

export function createChecker({ builder, errList, okLine, chart, team = null, delay = 300 }) {
  let seq = 0;
  let timer = null;
  let syntax = null; // the JSON view's syntax error, while there is one
  if (chart) Plotly.newPlot(chart, [], LAYOUT, { responsive: true, displaylogo: false });

  function show(lines) {
    showErrorList(errList, okLine, lines);
    builder.showErrors(lines);
  }

  // true when the server accepts the plan as it is now
  async function check() {
    clearTimeout(timer);
    const mine = ++seq;
    if (syntax) { showErrorList(errList, okLine, [["", syntax]]); return false; }
    const body = { plan: builder.plan() };
    if (team) body.team = team;
    try {
      const r = await postJSON("/api/ui/plan-preview/", body);
      if (mine !== seq) return true;
      show([]);
      if (chart) {
        const { shapes, annotations } = stageShapes(r.stages);
        Plotly.react(chart, [{ x: r.steps, y: r.lr, mode: "lines", name: "lr", line: { color: "#2f6fde" } }], { ...LAYOUT, shapes, annotations });
      }
      return true;
    } catch (e) {
      if (mine === seq) show(errorLines(e));
      return false;
    }
  }

  return {
    check,
    show,
    soon() { clearTimeout(timer); timer = setTimeout(check, delay); },
    syntaxError(msg) { syntax = msg; clearTimeout(timer); showErrorList(errList, okLine, [["", msg]]); },
    syntaxOk() { syntax = null; },
    hasSyntaxError: () => syntax !== null,
  };
}
