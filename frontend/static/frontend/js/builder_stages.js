// The stages of a plan as cards: one labelled group per stage with its fields in sections,
// and add, duplicate, delete and reorder (drag a card by its handle, or the "move up/down"
// buttons). Stages before `ctx.firstEditable` (a fork's inherited ones) are shown read-only.
import { h } from "./dom.js";
import { objectFields } from "./builder_form.js";
import { clone } from "./builder_schema.js";

// Sections of a stage card, in order; a stage field not listed goes to the last section, so
// a new plan field still has a place.
const SECTIONS = [
  ["", ["name", "objective"]],
  ["Data", ["data", "replay", "curriculum"]],
  ["Budget and batches", ["steps", "tokens", "batch_size", "seq_len"]],
  ["Optimizer and LR schedule", ["optimizer", "schedule"]],
  ["Evaluation", ["eval_sets", "eval_interval", "dense_eval", "task"]],
  ["Checkpoints", ["checkpoint_interval"]],
];

export function stageNode(reader) {
  return reader.resolve(reader.root.properties.stages).items;
}

function stageBody(ctx, i) {
  const node = stageNode(ctx.reader);
  const listed = SECTIONS.flatMap(([, keys]) => keys);
  const rest = Object.keys(ctx.reader.resolve(node).properties || {}).filter((k) => !listed.includes(k));
  const sections = [...SECTIONS, ["Other", rest]].map(([title, keys]) => {
    const fields = keys.length ? objectFields(ctx, node, ["stages", i], { only: keys }) : [];
    if (!fields.length) return null;
    return h("div", { class: "stage-section" }, title ? h("h3", {}, title) : null, ...fields);
  });
  return h("div", { class: "stage-body" }, sections);
}

function summary(st) {
  const budget = st.steps !== undefined ? `${st.steps} steps` : st.tokens !== undefined ? `${st.tokens} tokens` : "no budget";
  const data = (Array.isArray(st.data) ? st.data : []).map((d) => d && (d.name || d.source)).filter(Boolean).join(", ");
  return [st.objective, budget, data].filter(Boolean).join(" · ");
}

function actions(ctx, i, count) {
  const n = i + 1;
  const stages = () => [...ctx.plan().stages];
  const move = (to) => {
    const list = stages();
    const [st] = list.splice(i, 1);
    list.splice(to, 0, st);
    ctx.change(["stages"], list, null, { focus: `stage-${to}-${to < i ? "up" : "down"}` });
  };
  const btn = (label, text, onclick, cls, disabled, id) => h("button", { type: "button", class: `small ${cls}`, "aria-label": label, onclick, disabled: disabled || undefined, id }, text);
  return h("div", { class: "stage-actions" },
    btn(`Move stage ${n} up`, "↑ up", () => move(i - 1), "secondary", i <= ctx.firstEditable, `stage-${i}-up`),
    btn(`Move stage ${n} down`, "↓ down", () => move(i + 1), "secondary", i >= count - 1, `stage-${i}-down`),
    btn(`Duplicate stage ${n}`, "Duplicate", () => {
      const list = stages();
      const copy = clone(list[i]);
      if (copy && typeof copy.name === "string") copy.name = `${copy.name}-copy`;
      list.splice(i + 1, 0, copy);
      ctx.change(["stages"], list);
    }, "secondary"),
    btn(`Delete stage ${n}`, "Delete", () => ctx.change(["stages"], stages().filter((_, j) => j !== i)), "danger", count - ctx.firstEditable <= 1));
}

// Dragging a card by its handle onto another card moves it there.
function draggable(ctx, card, handle, i) {
  handle.addEventListener("dragstart", (e) => {
    e.dataTransfer.setData("text/x-stage", String(i));
    e.dataTransfer.effectAllowed = "move";
    card.classList.add("dragging");
  });
  handle.addEventListener("dragend", () => card.classList.remove("dragging"));
  card.addEventListener("dragover", (e) => {
    if (i < ctx.firstEditable || !e.dataTransfer.types.includes("text/x-stage")) return;
    e.preventDefault();
    card.classList.add("drop-target");
  });
  card.addEventListener("dragleave", () => card.classList.remove("drop-target"));
  card.addEventListener("drop", (e) => {
    e.preventDefault();
    card.classList.remove("drop-target");
    const from = Number(e.dataTransfer.getData("text/x-stage"));
    if (!Number.isInteger(from) || from === i) return;
    const list = [...ctx.plan().stages];
    const [st] = list.splice(from, 1);
    list.splice(i, 0, st);
    ctx.change(["stages"], list);
  });
}

function stageCard(ctx, st, i, count) {
  const inherited = i < ctx.firstEditable;
  const title = h("h2", { id: `stage-${i}-title` }, `Stage ${i + 1}`, h("span", { class: "stage-name" }, st && st.name ? ` · ${st.name}` : ""));
  const handle = inherited ? null : h("span", { class: "drag-handle", draggable: "true", title: "drag to reorder", "aria-hidden": "true" }, "⠿");
  const head = h("div", { class: "stage-head" }, handle, title,
    inherited ? h("span", { class: "badge" }, "inherited") : actions(ctx, i, count));
  const body = inherited
    ? h("details", { class: "inherited-body" }, h("summary", {}, summary(st || {})), stageBody(ctx, i))
    : stageBody(ctx, i);
  const card = h("section", { class: `stage-card${inherited ? " inherited" : ""}`, role: "group", "aria-label": `Stage ${i + 1}`,
    dataset: { path: `stages.${i}`, index: i } }, head, h("div", { class: "errslot" }), body);
  if (!inherited) draggable(ctx, card, handle, i);
  return card;
}

// A new stage: what the schema requires, with the previous stage's objective and data.
function newStage(ctx) {
  const stages = ctx.plan().stages || [];
  const prev = stages[stages.length - 1] || {};
  const node = ctx.reader.resolve(stageNode(ctx.reader));
  const objective = prev.objective || (node.properties.objective.enum || [])[0];
  const budget = prev.tokens !== undefined && prev.steps === undefined ? { tokens: prev.tokens } : { steps: prev.steps ?? 100 };
  return { name: `stage-${stages.length + 1}`, objective, data: [{}], ...budget };
}

export function renderStages(ctx, root) {
  const stages = Array.isArray(ctx.plan().stages) ? ctx.plan().stages : [];
  const cards = stages.map((st, i) => stageCard(ctx, st, i, stages.length));
  const add = h("button", { type: "button", id: "add-stage", onclick: () => ctx.change(["stages"], [...stages, newStage(ctx)], null, { focus: `stage-${stages.length}-title` }) }, "Add stage");
  const note = Array.isArray(ctx.plan().stages) ? null : h("p", { class: "error" }, "stages is not a list: fix it in the JSON view");
  root.replaceChildren(h("div", { class: "stages", dataset: { path: "stages" } }, h("div", { class: "errslot" }), note, ...cards), add);
  // the name in a card's title follows its field as it is typed
  for (const [i, card] of cards.entries()) {
    const input = card.querySelector(`#f-stages-${i}-name`);
    if (input) input.addEventListener("input", () => { card.querySelector(".stage-name").textContent = input.value ? ` · ${input.value}` : ""; });
  }
}
