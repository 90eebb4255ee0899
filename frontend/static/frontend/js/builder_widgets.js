// The few places where the builder shows a nicer control than the generic one, and the
// words and layout of the plan's fields. Everything here is keyed by "Definition.field" of
// the plan schema; a field with no entry gets the generic control (builder_form.js), so a new
// plan field shows up without new code here.
import { h } from "./dom.js";
import { checkboxList, fieldBox, fieldId, renderGeneric } from "./builder_form.js";

export const LABELS = {
  "Plan.name": "Pipeline name", "Plan.keep_last": "Checkpoints kept", "Plan.log_interval": "Log interval (steps)",
  "Plan.torch_threads": "Torch threads", "Plan.eval_sets": "Eval sets", "Plan.model": "Model",
  "ModelSpec.arch": "Architecture", "ModelSpec.n_layer": "Layers", "ModelSpec.n_embd": "Width (n_embd)",
  "ModelSpec.n_head": "Attention heads", "ModelSpec.path": "Model directory", "ModelSpec.hidden": "Hidden widths",
  "ModelSpec.vocab_size": "Vocabulary size", "ModelSpec.max_positions": "Max positions",
  "StageSpec.name": "Stage name", "StageSpec.data": "Data mixture", "StageSpec.replay": "Replay",
  "StageSpec.batch_size": "Batch size", "StageSpec.seq_len": "Sequence length", "StageSpec.optimizer": "Optimizer",
  "StageSpec.schedule": "LR schedule", "StageSpec.eval_sets": "Eval sets", "StageSpec.eval_interval": "Eval interval (steps)",
  "StageSpec.dense_eval": "Dense evaluation after the boundary", "StageSpec.checkpoint_interval": "Checkpoint interval (steps)",
  "StageSpec.curriculum": "Curriculum", "StageSpec.task": "Own task (eval set)",
  "DataSpec.name": "Name (for replay)", "DataSpec.permute_seed": "Permutation seed",
  "ReplaySpec.source": "Replay of", "ReplaySpec.ratio": "Ratio",
  "OptimizerSpec.lr": "Learning rate", "OptimizerSpec.eps": "Epsilon", "OptimizerSpec.grad_clip": "Gradient clip",
  "OptimizerSpec.reset": "Reset optimizer moments",
  "ScheduleSpec.kind": "Schedule", "ScheduleSpec.min_lr": "Min LR", "ScheduleSpec.plateau_lr": "Plateau LR",
  "ScheduleSpec.warmup_from": "Warm up from",
  "DenseEvalSpec.interval": "Dense eval interval", "DenseEvalSpec.steps": "Dense eval steps",
  "CurriculumSpec.by": "Order by", "CurriculumSpec.ref_model": "Reference model",
  "EvalSetSpec.name": "Eval set name", "EvalSetSpec.kind": "Eval kind", "EvalSetSpec.max_batches": "Max batches",
  "EvalSetSpec.seq_len": "Sequence length", "EvalSetSpec.permute_seed": "Permutation seed",
};

// Fields behind "More options" (rarely changed).
const MORE = ["Plan.keep_last", "Plan.log_interval", "Plan.torch_threads", "ModelSpec.n_layer", "ModelSpec.n_embd",
  "ModelSpec.n_head", "ModelSpec.path", "ModelSpec.dropout", "OptimizerSpec.betas", "OptimizerSpec.eps",
  "OptimizerSpec.reset", ...["DataSpec", "EvalSetSpec"].flatMap((d) => ["text_field", "prompt_field", "response_field",
    "classes", "permute_seed"].map((k) => `${d}.${k}`)), "EvalSetSpec.split", "EvalSetSpec.max_batches"];

const ROW_NOUNS = { "StageSpec.data": "data source", "StageSpec.replay": "replay source", "Plan.eval_sets": "eval set" };

// A schedule kind's own parameters. A parameter not listed here applies to the kind its help
// text starts with ("wsd: …"), else to every kind.
const SCHEDULE_KINDS = {
  min_lr: ["linear", "cosine", "wsd", "infinite"], decay_fraction: ["wsd"], decay_shape: ["wsd", "infinite"],
  plateau_lr: ["infinite"], cooldown_steps: ["infinite"], anneal_steps: ["infinite"],
};
const DIGITS_ONLY = ["classes", "permute_seed"];
const LM_ONLY = ["size", "n_layer", "n_embd", "n_head", "path", "vocab_size", "max_positions"];

export function builderLayout(reader) {
  const sched = reader.resolve({ $ref: "#/$defs/ScheduleSpec" }).properties || {};
  const kindDefault = (sched.kind || {}).default || "constant";
  const scheduleRule = (obj, key) => {
    if (key === "kind") return true;
    const kind = obj.kind || kindDefault;
    if (SCHEDULE_KINDS[key]) return SCHEDULE_KINDS[key].includes(kind);
    const m = /^([a-z0-9-]+):/.exec((sched[key] || {}).description || "");
    return m && (sched.kind || {}).enum && sched.kind.enum.includes(m[1]) ? m[1] === kind : true;
  };
  const sourceRule = (obj, key) => !DIGITS_ONLY.includes(key) || obj.source === "builtin:digits";
  return {
    labels: LABELS,
    more: new Set(MORE),
    rowNoun: ROW_NOUNS,
    order: { EvalSetSpec: ["name", "source", "kind"], DataSpec: ["source", "weight", "name"] }, // fields shown first
    when: {
      "ScheduleSpec.*": scheduleRule,
      "DataSpec.*": sourceRule,
      "EvalSetSpec.*": sourceRule,
      "ModelSpec.*": (obj, key) => (key === "hidden" ? obj.arch === "mlp" : !LM_ONLY.includes(key) || obj.arch !== "mlp"),
      "CurriculumSpec.ref_model": (obj) => obj.by === "ref_loss",
    },
  };
}

// ------------------------------------------------------------------------------- widgets

const OTHER = "__other__";

// A data or eval source: the builtin sets, the team's registered dataset versions, or any
// other reference typed in (file:/abs/path.jsonl, …).
function sourcePicker(ctx, f) {
  const id = fieldId(f.path);
  const v = ctx.value(f.path);
  const known = [...ctx.sources.builtin, ...ctx.sources.datasets.flatMap((d) => datasetRefs(d))];
  const otherKey = `other:${f.path.join(".")}`;
  const other = ctx.openDetails.has(otherKey) || (typeof v === "string" && v !== "" && !known.includes(v));
  const opt = (value, text) => h("option", { value, selected: (!other && value === v) || undefined }, text || value);
  const datasets = ctx.sources.datasets.length ? h("optgroup", { label: "Team datasets" },
    ctx.sources.datasets.flatMap((d) => datasetRefs(d).map((r, i) => opt(r, i === 0 ? `${r} (newest)` : r)))) : null;
  const sel = h("select", { id, disabled: ctx.readOnly(f.path) || undefined, "aria-describedby": `${id}-help` },
    h("option", { value: "" }, "— choose a source —"), h("optgroup", { label: "Builtin" }, ctx.sources.builtin.map((s) => opt(s))),
    datasets, h("option", { value: OTHER, selected: other || undefined }, "Other (file:/path or reference)…"));
  sel.addEventListener("change", () => {
    if (sel.value === OTHER) ctx.openDetails.add(otherKey);
    else ctx.openDetails.delete(otherKey);
    ctx.change(f.path, sel.value === OTHER || sel.value === "" ? undefined : sel.value, f);
  });
  const text = other ? h("input", { id: `${id}-other`, type: "text", value: v || "", placeholder: "file:/abs/path.jsonl", disabled: ctx.readOnly(f.path) || undefined }) : null;
  if (text) text.addEventListener("input", () => ctx.input(f.path, text.value.trim() || undefined));
  return fieldBox(f.path, "", h("label", { for: id }, "Source"), sel,
    text ? h("label", { for: `${id}-other`, class: "small" }, "Source reference") : null, text,
    h("p", { class: "help muted small", id: `${id}-help` }, "builtin set, a version of one of the team's datasets, or file:/abs/path"));
}

function datasetRefs(d) {
  return [`dataset:${d.name}`, ...d.versions.map((n) => `dataset:${d.name}@${n}`)];
}

// The names replay can refer to: the data entries (name, else source) of earlier stages.
function earlierData(plan, stageIndex) {
  const out = [];
  for (const st of (plan.stages || []).slice(0, stageIndex)) {
    for (const d of (st && Array.isArray(st.data) ? st.data : [])) {
      const ref = d && (d.name || d.source);
      if (ref && !out.includes(ref)) out.push(ref);
    }
  }
  return out;
}

const evalNames = (plan) => (Array.isArray(plan.eval_sets) ? plan.eval_sets.map((e) => e && e.name).filter(Boolean) : []);

// A control whose choices come from elsewhere in the plan: it redraws itself (only itself)
// when those choices change, e.g. while an eval set's name is being typed.
function dependent(ctx, choicesOf, draw) {
  let sig = JSON.stringify(choicesOf());
  let box = draw();
  ctx.refreshers.push(() => {
    const now = JSON.stringify(choicesOf());
    if (now === sig || !box.isConnected) return;
    sig = now;
    const fresh = draw();
    box.replaceWith(fresh);
    box = fresh;
  });
  return box;
}

function choiceSelect(ctx, f, label, choices, blank) {
  const id = fieldId(f.path);
  const v = ctx.value(f.path);
  const all = v && !choices.includes(v) ? [...choices, v] : choices;
  const sel = h("select", { id, disabled: ctx.readOnly(f.path) || undefined, "aria-describedby": `${id}-help` },
    h("option", { value: "" }, blank), all.map((c) => h("option", { value: c, selected: c === v || undefined }, c)));
  sel.addEventListener("change", () => ctx.change(f.path, sel.value || undefined, f));
  const node = ctx.reader.resolve(f.node);
  return fieldBox(f.path, "", h("label", { for: id }, label), sel,
    h("p", { class: "help muted small", id: `${id}-help` }, node.description || (node.anyOf || []).map((a) => a.description).find(Boolean) || ""));
}

function replaySource(ctx, f) {
  const stage = f.path[1];
  return dependent(ctx, () => earlierData(ctx.plan(), stage), () => choiceSelect(ctx, f, "Replay of", earlierData(ctx.plan(), stage), "— an earlier stage's data —"));
}

function stageEvalSets(ctx, f) {
  const field = { ...f, label: "Eval sets", raw: ctx.reader.resolve(f.node) };
  return dependent(ctx, () => evalNames(ctx.plan()), () => checkboxList(ctx, field, evalNames(ctx.plan()), (s) => s));
}

function stageTask(ctx, f) {
  return dependent(ctx, () => evalNames(ctx.plan()), () => choiceSelect(ctx, f, "Own task (eval set)", evalNames(ctx.plan()), "(none)"));
}

// A stage's budget: steps or tokens (exactly one), one radio and one number.
function budget(ctx, f) {
  const stage = ctx.value(f.objectPath) || {};
  const props = ctx.reader.resolve(f.objectNode).properties;
  const has = (k) => stage[k] !== undefined && stage[k] !== null; // a snapshot has null for unset
  const both = has("steps") && has("tokens");
  const unit = has("tokens") && !has("steps") ? "tokens" : "steps";
  const name = `${fieldId(f.objectPath)}-budget`;
  const radio = (u) => {
    const r = h("input", { type: "radio", name, id: `${name}-${u}`, value: u, checked: u === unit || undefined, disabled: ctx.readOnly(f.path) || undefined });
    r.addEventListener("change", () => {
      const other = u === "steps" ? "tokens" : "steps";
      const moved = ctx.value([...f.objectPath, other]);
      ctx.input([...f.objectPath, other], undefined);
      ctx.change([...f.objectPath, u], moved ?? undefined, f);
    });
    return h("label", { for: `${name}-${u}`, class: "check" }, r, ` Budget in ${u}`);
  };
  const input = (u) => renderGeneric(ctx, { ...f, key: u, node: props[u], path: [...f.objectPath, u] });
  return h("fieldset", { class: "budget" }, h("legend", {}, "Budget"), h("div", { class: "inline" }, radio("steps"), radio("tokens")),
    ...(both ? [input("steps"), input("tokens")] : [input(unit)]));
}

export const WIDGETS = {
  "DataSpec.source": sourcePicker,
  "EvalSetSpec.source": sourcePicker,
  "ReplaySpec.source": replaySource,
  "StageSpec.eval_sets": stageEvalSets,
  "StageSpec.task": stageTask,
  "StageSpec.steps": budget,
  "StageSpec.tokens": () => null,
};
