// What-if: fit the LR-annealing law on a run's training loss, then predict the loss of the
// plan's LR schedule. Only runs whose model matches the plan's model are offered (the law
// says nothing about another network); the list follows the model as it is edited.
import { errorLines, getJSON, postJSON } from "./api.js";
import { fmtNum, h, replaceChildren } from "./dom.js";
import { drawWhatIf } from "./lr_law_ui.js";
import { withDefaults } from "./builder_schema.js";

// Each field the plan gives (or defaults) must equal the run's (its snapshot has them all).
export function modelMatches(reader, planModel, runModel) {
  if (!runModel || typeof runModel !== "object") return false;
  if (planModel !== undefined && (planModel === null || typeof planModel !== "object" || Array.isArray(planModel))) return false;
  const want = withDefaults(reader, reader.root.properties.model, planModel || {});
  return Object.entries(want).every(([k, v]) => !(k in runModel) || JSON.stringify(runModel[k]) === JSON.stringify(v));
}

export function setupWhatIf({ runs, reader, getPlan }) {
  const sel = document.getElementById("whatif-run");
  const btn = document.getElementById("whatif-predict");
  const errors = document.getElementById("whatif-errors");
  const status = document.getElementById("whatif-status");
  const empty = document.getElementById("whatif-empty");
  let shown = null;

  function update(plan) {
    const fits = runs.filter((r) => modelMatches(reader, plan && plan.model, r.model));
    const sig = fits.map((r) => r.id).join(",");
    if (sig === shown) return;
    shown = sig;
    const keep = sel.value;
    replaceChildren(sel, fits.map((r) => h("option", { value: r.id, selected: String(r.id) === keep || undefined }, `#${r.id} ${r.name} (${r.state})`)));
    empty.hidden = fits.length > 0;
    empty.textContent = runs.length ? "No running or finished run has this plan's model." : "No running or finished run to fit on yet.";
    btn.disabled = fits.length === 0;
  }

  function showErrors(lines) {
    replaceChildren(errors, lines.map(([path, msg]) => h("li", {}, path && path !== "detail" ? h("code", {}, path) : null,
      path && path !== "detail" ? " " : null, msg)));
  }

  async function predict() {
    showErrors([]);
    status.textContent = "";
    const runId = Number(sel.value);
    const run = runs.find((r) => r.id === runId);
    btn.disabled = true;
    status.textContent = "fitting…";
    try {
      const key = encodeURIComponent("train/loss");
      const [r, ref] = await Promise.all([
        postJSON(`/api/runs/${runId}/lr-law/what-if/`, { plan: getPlan() }),
        getJSON(`/api/runs/${runId}/series/?keys=${key}&max_points=1000`).catch(() => null),
      ]);
      const obs = ref && ref.series["train/loss"];
      drawWhatIf("chart-whatif", r, obs ? { ...obs, name: `observed #${runId}` } : null);
      const last = r.predicted[r.predicted.length - 1];
      status.textContent = `fitted on #${runId} ${run ? run.name : ""} · predicted final loss ${fmtNum(last)} at step ${r.steps[r.steps.length - 1]}`;
    } catch (e) {
      status.textContent = "";
      showErrors(errorLines(e));
    } finally {
      btn.disabled = sel.options.length === 0;
    }
  }
  btn.addEventListener("click", predict);
  return { update };
}
