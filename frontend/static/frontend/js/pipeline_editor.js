// The pipeline page: the builder (a form generated from the plan schema, stage cards and a
// JSON view in sync), validation and the LR preview as you type, the what-if prediction,
// save, run and delete. A new pipeline is created with POST; once it has an id, saves PUT to
// it, so a rename in the plan's name keeps the same pipeline.
import { deleteJSON, errorLines, postJSON, putJSON } from "./api.js";
import { h, pageData } from "./dom.js";
import { createBuilder } from "./builder_core.js";
import { createChecker } from "./builder_check.js";
import { setupTabs } from "./builder_tabs.js";
import { setupWhatIf } from "./builder_whatif.js";

const data = pageData();
const status = document.getElementById("editor-status");
const queueSel = document.getElementById("run-queue");
const descInput = document.getElementById("pipeline-description");
const deleteBtn = document.getElementById("delete-pipeline");
let pipelineId = data.pipeline;
let savedName = pipelineId && data.plan ? data.plan.name : null;

const EMPTY_PLAN = { name: "my-pipeline", seed: 0, model: { arch: "gpt2", size: "tiny" }, eval_sets: [],
  stages: [{ name: "stage-1", objective: "causal_lm", data: [{ source: "builtin:prose" }], steps: 100 }] };
for (const q of data.queues) queueSel.append(h("option", { value: q.name }, q.paused ? `${q.name} (paused)` : q.name));

let checker = null;
let whatif = null;
const builder = createBuilder({
  schema: data.schema,
  sources: { builtin: data.builtin_sources, datasets: data.datasets },
  plan: data.plan || EMPTY_PLAN,
  planForm: document.getElementById("plan-form"),
  stagesRoot: document.getElementById("stages"),
  jsonRoot: document.getElementById("json-editor"),
  onChange(plan) {
    if (!checker) return;
    checker.syntaxOk();
    checker.soon();
    whatif.update(plan);
  },
  onSyntaxError: (msg) => checker && checker.syntaxError(msg),
});
checker = createChecker({ builder, errList: document.getElementById("plan-errors"), okLine: document.getElementById("plan-ok"),
  chart: document.getElementById("chart-lr-preview") });
whatif = setupWhatIf({ runs: data.whatif_runs, reader: builder.reader, getPlan: () => builder.plan() });
whatif.update(builder.plan());
setupTabs(document.getElementById("builder-tabs"));

function showSaved(p) {
  pipelineId = p.id;
  savedName = p.name;
  deleteBtn.hidden = false;
  const title = document.getElementById("pipeline-title");
  if (title) title.textContent = p.name;
  document.title = `${p.name} · Stagewise`;
  history.replaceState(null, "", `/pipelines/${p.id}/edit/`);
}

async function save() {
  status.textContent = "Saving…";
  if (checker.hasSyntaxError()) { status.textContent = "Fix the JSON syntax first."; return null; }
  if (!(await checker.check())) { status.textContent = "Fix the errors first."; return null; }
  const body = { plan: builder.plan(), description: descInput.value };
  try {
    const p = pipelineId ? await putJSON(`/api/pipelines/${pipelineId}/`, body) : await postJSON("/api/pipelines/", body);
    showSaved(p);
    status.textContent = `Saved pipeline “${p.name}”.`;
    return p;
  } catch (e) {
    checker.show(errorLines(e));
    status.textContent = "Not saved: see the errors.";
    return null;
  }
}

async function remove() {
  if (!pipelineId) return;
  const name = savedName || `#${pipelineId}`;
  if (!window.confirm(`Delete pipeline “${name}”? Runs made from it keep their plans and results.`)) return;
  deleteBtn.disabled = true;
  try {
    await deleteJSON(`/api/pipelines/${pipelineId}/`);
    window.location.href = "/pipelines/";
  } catch (e) {
    checker.show(errorLines(e));
    status.textContent = "Not deleted: see the errors.";
    deleteBtn.disabled = false;
  }
}

async function saveAndRun() {
  const p = await save();
  if (!p) return;
  try {
    const body = { pipeline: p.id, queue: queueSel.value };
    const name = document.getElementById("run-name").value.trim();
    if (name) body.name = name;
    const run = await postJSON("/api/runs/", body);
    window.location.href = `/runs/${run.id}/`;
  } catch (e) {
    status.textContent = `Could not start the run: ${errorLines(e).map(([k, m]) => (k ? `${k}: ${m}` : m)).join("; ")}`;
  }
}

deleteBtn.addEventListener("click", remove);
document.getElementById("save-pipeline").addEventListener("click", save);
document.getElementById("run-pipeline").addEventListener("click", saveAndRun);
window.stagewiseBuilder = builder; // for tests and the console
checker.check();
