// Pipeline editor: JSON plan with inline validation (field paths from the plan validator),
// a per-stage table that marks stages with errors, a live LR preview, a what-if loss prediction
// (the LR law fitted on a chosen run, applied to this plan's schedule), save, run and delete.
// A new pipeline is created with POST; once it has an id, saves PUT to it, so a rename in
// the plan's name keeps the same pipeline.
import { deleteJSON, errorLines, getJSON, postJSON, putJSON } from "./api.js";
import { fmtNum, h, pageData, replaceChildren } from "./dom.js";
import { drawWhatIf } from "./lr_law_ui.js";
import { stageShapes } from "./run_charts_ui.js";

const data = pageData();
const ta = document.getElementById("plan-json");
const status = document.getElementById("editor-status");
const errList = document.getElementById("plan-errors");
const okLine = document.getElementById("plan-ok");
const queueSel = document.getElementById("run-queue");
const descInput = document.getElementById("pipeline-description");
const deleteBtn = document.getElementById("delete-pipeline");
let pipelineId = data.pipeline;
let savedName = pipelineId && data.plan ? data.plan.name : null;

const EMPTY_PLAN = { name: "my-pipeline", seed: 0, model: { arch: "gpt2", size: "tiny" }, eval_sets: [],
  stages: [{ name: "stage-1", objective: "causal_lm", data: [{ source: "builtin:prose" }], steps: 100 }] };
ta.value = JSON.stringify(data.plan || EMPTY_PLAN, null, 2);
for (const q of data.queues) queueSel.append(h("option", { value: q.name }, q.paused ? `${q.name} (paused)` : q.name));

Plotly.newPlot("chart-lr-preview", [], { margin: { l: 60, r: 10, t: 20, b: 40 },
  xaxis: { title: { text: "global step" } }, yaxis: { title: { text: "lr" } } }, { responsive: true, displaylogo: false });

function parse() {
  try { return { plan: JSON.parse(ta.value) }; } catch (e) { return { error: `JSON syntax: ${e.message}` }; }
}

function showErrors(lines) {
  okLine.hidden = lines.length > 0;
  replaceChildren(errList, lines.map(([path, msg]) => h("li", { dataset: { path } }, path ? h("code", {}, path) : null, path ? " " : null, msg)));
}

function renderStages(plan, lines) {
  const bad = new Set(lines.map(([p]) => p).filter((p) => p.startsWith("stages.")).map((p) => Number(p.split(".")[1])));
  const stages = Array.isArray(plan && plan.stages) ? plan.stages : [];
  replaceChildren(document.querySelector("#stage-table tbody"), stages.map((s, i) => {
    const msgs = lines.filter(([p]) => p.startsWith(`stages.${i}.`) || p === `stages.${i}`);
    return [h("tr", { class: bad.has(i) ? "has-error" : "" },
      h("td", {}, i), h("td", {}, String(s.name ?? "")), h("td", {}, String(s.objective ?? "")),
      h("td", {}, s.steps !== undefined ? `${s.steps} steps` : s.tokens !== undefined ? `${s.tokens} tokens` : "—"),
      h("td", {}, (s.data || []).map((d) => `${d.source}${d.weight !== undefined ? ` ×${d.weight}` : ""}`).join(", ")),
      h("td", {}, s.optimizer && s.optimizer.lr !== undefined ? String(s.optimizer.lr) : "default"),
      h("td", {}, s.schedule && s.schedule.kind ? String(s.schedule.kind) : "default"),
      h("td", {}, (s.eval_sets || []).join(", "))),
    msgs.length ? h("tr", { class: "has-error" }, h("td", { colspan: 8, class: "error small" },
      msgs.map(([p, m]) => `${p}: ${m}`).join(" · "))) : null];
  }).flat());
}

let seq = 0;
async function check() {
  const mine = ++seq;
  const { plan, error } = parse();
  if (error) { showErrors([["", error]]); renderStages(null, []); return false; }
  try {
    const r = await postJSON("/api/ui/plan-preview/", { plan });
    if (mine !== seq) return true;
    showErrors([]);
    renderStages(plan, []);
    const { shapes, annotations } = stageShapes(r.stages);
    Plotly.react("chart-lr-preview", [{ x: r.steps, y: r.lr, mode: "lines", name: "lr", line: { color: "#2f6fde" } }],
      { margin: { l: 60, r: 10, t: 24, b: 40 }, shapes, annotations, xaxis: { title: { text: "global step" } },
        yaxis: { title: { text: "lr" } } });
    return true;
  } catch (e) {
    if (mine !== seq) return false;
    const lines = errorLines(e);
    showErrors(lines);
    renderStages(plan, lines);
    return false;
  }
}

let timer = null;
ta.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 300); });

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
  if (!(await check())) { status.textContent = "Fix the errors first."; return null; }
  const body = { plan: JSON.parse(ta.value), description: descInput.value };
  try {
    const p = pipelineId ? await putJSON(`/api/pipelines/${pipelineId}/`, body) : await postJSON("/api/pipelines/", body);
    showSaved(p);
    status.textContent = `Saved pipeline “${p.name}”.`;
    return p;
  } catch (e) {
    const lines = errorLines(e);
    showErrors(lines);
    renderStages(body.plan, lines);
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
    showErrors(errorLines(e));
    status.textContent = "Not deleted: see the errors.";
    deleteBtn.disabled = false;
  }
}
deleteBtn.addEventListener("click", remove);

document.getElementById("save-pipeline").addEventListener("click", save);
document.getElementById("run-pipeline").addEventListener("click", async () => {
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
});
// ---------------------------------------------------------------- what-if
const whatifSel = document.getElementById("whatif-run");
const whatifBtn = document.getElementById("whatif-predict");
const whatifErrors = document.getElementById("whatif-errors");
const whatifStatus = document.getElementById("whatif-status");
for (const r of data.whatif_runs) whatifSel.append(h("option", { value: r.id }, `#${r.id} ${r.name} (${r.state})`));
document.getElementById("whatif-empty").hidden = data.whatif_runs.length > 0;
whatifBtn.disabled = data.whatif_runs.length === 0;

function whatIfErrors(lines) {
  replaceChildren(whatifErrors, lines.map(([path, msg]) => h("li", {}, path && path !== "detail" ? h("code", {}, path) : null,
    path && path !== "detail" ? " " : null, msg)));
}

async function predict() {
  whatIfErrors([]);
  whatifStatus.textContent = "";
  const { plan, error } = parse();
  if (error) { whatIfErrors([["", error]]); return; }
  const runId = Number(whatifSel.value);
  const run = data.whatif_runs.find((r) => r.id === runId);
  whatifBtn.disabled = true;
  whatifStatus.textContent = "fitting…";
  try {
    const key = encodeURIComponent("train/loss");
    const [r, ref] = await Promise.all([
      postJSON(`/api/runs/${runId}/lr-law/what-if/`, { plan }),
      getJSON(`/api/runs/${runId}/series/?keys=${key}&max_points=1000`).catch(() => null),
    ]);
    const obs = ref && ref.series["train/loss"];
    drawWhatIf("chart-whatif", r, obs ? { ...obs, name: `observed #${runId}` } : null);
    const last = r.predicted[r.predicted.length - 1];
    whatifStatus.textContent = `fitted on #${runId} ${run ? run.name : ""} · predicted final loss ${fmtNum(last)} at step ${r.steps[r.steps.length - 1]}`;
  } catch (e) {
    whatifStatus.textContent = "";
    whatIfErrors(errorLines(e));
  } finally {
    whatifBtn.disabled = false;
  }
}
whatifBtn.addEventListener("click", predict);

check();
