// A form generated from a JSON schema: one labelled control per field (object, enum, number,
// integer, boolean, string, array, tuple, anyOf / discriminated union), its help text, bounds
// and default from the schema. The form edits the plan document in place through `ctx`:
//   ctx.value(path)                       the current value at a path
//   ctx.input(path, value)                a typed value (no re-render; undefined unsets)
//   ctx.change(path, value, f)            a structural change of field f: set, drop the fields
//                                         of f's object that no longer apply, re-render
//   ctx.reader, ctx.readOnly(path), ctx.widgets (overrides by "Def.key"), ctx.layout
// A field left empty is not stored: the plan keeps only what the user set (defaults apply).
import { h } from "./dom.js";
import { helpText, humanize, kindOf, pathKey, unwrapNullable } from "./builder_schema.js";

export const fieldId = (path) => `f-${path.join("-")}`;

// The layout's words for a field, else its key in plain words ("warmup_steps" -> "Warmup
// steps"; pydantic's titles are the same words in Title Case).
export function labelFor(ctx, def, key) {
  return ctx.layout.labels[`${def}.${key}`] || humanize(key);
}

// The wrapper every field lives in: its path (where errors are shown) and an error slot.
export function fieldBox(path, cls, ...children) {
  return h("div", { class: `field ${cls || ""}`, dataset: { path: pathKey(path) } }, ...children, h("div", { class: "errslot" }));
}

function help(id, text) {
  return text ? h("p", { class: "help muted small", id: `${id}-help` }, text) : null;
}

// One field of an object: an override widget or the generic control for its kind.
export function renderField(ctx, f) {
  const widget = ctx.widgets[`${f.def}.${f.key}`];
  if (widget) return widget(ctx, f);
  return renderGeneric(ctx, f);
}

export function renderGeneric(ctx, f) {
  const raw = ctx.reader.resolve(f.node);
  const { inner, nullable } = unwrapNullable(raw);
  const node = ctx.reader.resolve(inner);
  const value = ctx.value(f.path);
  const kind = kindOf(node);
  const field = { ...f, node, nullable, label: f.label || labelFor(ctx, f.def, f.key), raw };
  if (kind === "const") return null; // nothing to choose
  if (!fits(kind, value)) return jsonControl(ctx, field, "this value does not fit the form");
  const render = CONTROLS[kind] || jsonControl;
  return render(ctx, field);
}

function fits(kind, value) {
  if (value === undefined || value === null) return true;
  if (kind === "object") return typeof value === "object" && !Array.isArray(value);
  if (kind === "array" || kind === "tuple") return Array.isArray(value);
  if (kind === "number" || kind === "integer") return typeof value === "number";
  if (kind === "boolean") return typeof value === "boolean";
  if (kind === "string") return typeof value === "string";
  return true;
}

function disabled(ctx, f) {
  return ctx.readOnly(f.path) || undefined;
}

function inputControl(ctx, f, type, parse) {
  const id = fieldId(f.path);
  const v = ctx.value(f.path);
  const off = v === null && switchable(f); // switched off with its "No …" box
  const attrs = { id, type, value: v === undefined || v === null ? "" : v, disabled: disabled(ctx, f) || off || undefined,
    "aria-describedby": `${id}-help`, placeholder: f.raw.default ?? f.node.default ?? "", autocomplete: "off" };
  if (type === "number") Object.assign(attrs, numberAttrs(f.node));
  const input = h("input", attrs);
  input.addEventListener("input", () => {
    const text = input.value.trim();
    ctx.input(f.path, text === "" ? undefined : parse(text));
  });
  return fieldBox(f.path, "", h("label", { for: id }, f.label), input, noneBox(ctx, f, v), help(id, helpText(f.raw, f)));
}

// An optional field whose default is a value (grad_clip: 1.0) can also be switched off (null).
const switchable = (f) => f.nullable && f.raw.default !== null && f.raw.default !== undefined;

function noneBox(ctx, f, v) {
  if (!switchable(f)) return null;
  const id = `${fieldId(f.path)}-none`;
  const box = h("input", { id, type: "checkbox", checked: v === null || undefined, disabled: disabled(ctx, f) });
  box.addEventListener("change", () => ctx.change(f.path, box.checked ? null : undefined, f));
  return h("div", { class: "check small" }, box, h("label", { for: id }, `No ${f.label.toLowerCase()}`));
}

function numberAttrs(node) {
  const isInt = node.type === "integer";
  const out = { step: isInt ? 1 : "any", inputmode: isInt ? "numeric" : "decimal" };
  if (node.minimum !== undefined) out.min = node.minimum;
  else if (isInt && node.exclusiveMinimum !== undefined) out.min = node.exclusiveMinimum + 1;
  if (node.maximum !== undefined && node.maximum < 1e15) out.max = node.maximum;
  return out;
}

const parseNumber = (text) => (Number.isFinite(Number(text)) ? Number(text) : text);

function enumControl(ctx, f) {
  const id = fieldId(f.path);
  const v = ctx.value(f.path);
  const dflt = f.raw.default ?? f.node.default;
  const blank = v === undefined || v === null || f.nullable || dflt !== undefined || !f.required;
  const blankText = dflt !== undefined && dflt !== null ? `(default: ${dflt})` : f.nullable ? "(none)" : "— choose —";
  const options = [blank ? h("option", { value: "" }, blankText) : null,
    ...f.node.enum.map((e) => h("option", { value: String(e), selected: e === v || undefined }, String(e)))];
  const sel = h("select", { id, disabled: disabled(ctx, f), "aria-describedby": `${id}-help` }, options);
  sel.addEventListener("change", () => {
    const picked = f.node.enum.find((e) => String(e) === sel.value);
    ctx.change(f.path, sel.value === "" ? undefined : picked, f);
  });
  return fieldBox(f.path, "", h("label", { for: id }, f.label), sel, help(id, helpText(f.raw, f)));
}

function booleanControl(ctx, f) {
  const id = fieldId(f.path);
  const dflt = f.raw.default ?? false;
  const v = ctx.value(f.path);
  const box = h("input", { id, type: "checkbox", checked: (v ?? dflt) || undefined, disabled: disabled(ctx, f), "aria-describedby": `${id}-help` });
  // nothing else in the form depends on a flag: no re-render (the box stays the one clicked)
  box.addEventListener("change", () => ctx.input(f.path, box.checked === dflt ? undefined : box.checked));
  return fieldBox(f.path, "check", box, h("label", { for: id }, f.label), help(id, helpText(f.raw, f)));
}

// A list of numbers or strings typed as "64, 128"; a list of enum values as checkboxes.
function arrayControl(ctx, f) {
  const items = ctx.reader.resolve(f.node.items || {});
  if (kindOf(items) === "object") return rowsControl(ctx, { ...f, items });
  if (items.enum) return checkboxList(ctx, f, items.enum.map(String), (s) => items.enum.find((e) => String(e) === s));
  const numeric = items.type === "integer" || items.type === "number";
  const label = `${f.label} (comma-separated)`;
  const shown = { ...f, label };
  const parse = (text) => text.split(",").map((s) => s.trim()).filter(Boolean).map((s) => (numeric ? parseNumber(s) : s));
  const box = inputControl(ctx, shown, "text", parse);
  const v = ctx.value(f.path);
  if (Array.isArray(v)) box.querySelector("input").value = v.join(", ");
  return box;
}

export function checkboxList(ctx, f, choices, toValue) {
  const current = Array.isArray(ctx.value(f.path)) ? ctx.value(f.path) : [];
  const id = fieldId(f.path);
  const boxes = choices.map((c, i) => {
    const cid = `${id}-${i}`;
    const box = h("input", { id: cid, type: "checkbox", value: c, checked: current.map(String).includes(c) || undefined, disabled: disabled(ctx, f) });
    box.addEventListener("change", () => {
      const now = (Array.isArray(ctx.value(f.path)) ? ctx.value(f.path) : []).map(String);
      const picked = choices.filter((x, j) => (j === i ? box.checked : now.includes(x))).map(toValue);
      ctx.input(f.path, picked.length ? picked : undefined); // in the choices' order
    });
    return h("label", { for: cid, class: "check" }, box, ` ${c}`);
  });
  const empty = choices.length ? null : h("p", { class: "muted small" }, "nothing to choose yet");
  return fieldBox(f.path, "", h("fieldset", { class: "checks", "aria-describedby": `${id}-help` },
    h("legend", {}, f.label), ...boxes, empty), help(id, helpText(f.raw, f)));
}

// A fixed-length list (pydantic tuple): one input per position.
function tupleControl(ctx, f) {
  const dflt = Array.isArray(f.raw.default) ? f.raw.default : null;
  const setItem = (i, v) => {
    const now = ctx.value(f.path);
    const cur = Array.isArray(now) ? [...now] : f.node.prefixItems.map((_, j) => (dflt ? dflt[j] : null));
    cur[i] = v === undefined ? (dflt ? dflt[i] : null) : v;
    ctx.input(f.path, cur);
  };
  const parts = f.node.prefixItems.map((item, i) => {
    const raw = { ...item, default: dflt ? dflt[i] : undefined };
    const itemField = { ...f, node: item, raw, path: [...f.path, i], label: `${f.label} ${i + 1}` };
    return inputControl({ ...ctx, input: (_, v) => setItem(i, v) }, itemField, "number", parseNumber);
  });
  return fieldBox(f.path, "tuple", h("fieldset", {}, h("legend", {}, f.label), ...parts,
    help(fieldId(f.path), helpText(f.raw, f))));
}

// Anything the form has no control for (or a value of the wrong type): its JSON, editable.
function jsonControl(ctx, f, note) {
  const id = fieldId(f.path);
  const v = ctx.value(f.path);
  const input = h("input", { id, type: "text", class: "code", value: v === undefined ? "" : JSON.stringify(v), disabled: disabled(ctx, f), "aria-describedby": `${id}-help` });
  input.addEventListener("input", () => {
    if (input.value.trim() === "") return ctx.input(f.path, undefined);
    try { ctx.input(f.path, JSON.parse(input.value)); input.removeAttribute("aria-invalid"); } catch { input.setAttribute("aria-invalid", "true"); }
  });
  const why = typeof note === "string" ? note : "as JSON";
  return fieldBox(f.path, "", h("label", { for: id }, `${f.label} (JSON)`), input, help(id, [why, helpText(f.raw, f)].filter(Boolean).join(" · ")));
}

const CONTROLS = {
  string: (ctx, f) => inputControl(ctx, f, "text", (t) => t),
  number: (ctx, f) => inputControl(ctx, f, "number", parseNumber),
  integer: (ctx, f) => inputControl(ctx, f, "number", parseNumber),
  enum: enumControl,
  boolean: booleanControl,
  array: arrayControl,
  tuple: tupleControl,
  object: (ctx, f) => objectControl(ctx, f),
  union: (ctx, f) => unionControl(ctx, f),
};

// ------------------------------------------------------------------ objects, rows, unions

// The fields of an object, in schema order; a layout may move some under "More options" and
// hide some while they do not apply (`layout.when["Def.key"](object)`).
export function objectFields(ctx, node, path, { skip = [], only = null } = {}) {
  const n = ctx.reader.resolve(node);
  const def = ctx.reader.defOf(node);
  const obj = ctx.value(path) || {};
  const required = new Set(n.required || []);
  const main = [];
  const more = [];
  const first = ctx.layout.order[def] || [];
  const rank = (k) => (first.includes(k) ? first.indexOf(k) : first.length);
  const entries = Object.entries(n.properties || {}).sort(([a], [b]) => rank(a) - rank(b)); // stable
  for (const [key, prop] of entries) {
    if (skip.includes(key) || (only && !only.includes(key)) || !applies(ctx, def, key, obj)) continue;
    const el = renderField(ctx, { def, key, node: prop, path: [...path, key], objectPath: path, objectNode: node, required: required.has(key) });
    if (!el) continue;
    (ctx.layout.more.has(`${def}.${key}`) ? more : main).push(el);
  }
  if (more.length) main.push(moreBox(ctx, path, more));
  return main;
}

export function applies(ctx, def, key, obj) {
  const rule = ctx.layout.when[`${def}.${key}`] || ctx.layout.when[`${def}.*`];
  return rule ? rule(obj, key) : true;
}

function moreBox(ctx, path, children) {
  const key = pathKey(path);
  const box = h("details", { class: "more", open: ctx.openDetails.has(key) || undefined }, h("summary", {}, "More options"), ...children);
  box.addEventListener("toggle", () => (box.open ? ctx.openDetails.add(key) : ctx.openDetails.delete(key)));
  return box;
}

// A nested object: a group with its legend; an optional one (`X | None`) behind a checkbox.
function objectControl(ctx, f) {
  const v = ctx.value(f.path);
  const present = v !== undefined && v !== null;
  const id = fieldId(f.path);
  const legend = h("legend", {}, f.label);
  if (!f.nullable) {
    return fieldBox(f.path, "object", h("fieldset", { "aria-describedby": `${id}-help` }, legend,
      help(id, helpText(f.raw, f)), ...objectFields(ctx, f.node, f.path)));
  }
  const toggle = h("input", { id, type: "checkbox", checked: present || undefined, disabled: disabled(ctx, f), "aria-describedby": `${id}-help` });
  toggle.addEventListener("change", () => ctx.change(f.path, toggle.checked ? {} : undefined, f));
  const body = present ? h("fieldset", {}, h("legend", { class: "visually-hidden" }, f.label), ...objectFields(ctx, f.node, f.path)) : null;
  return fieldBox(f.path, "object optional", h("div", { class: "check" }, toggle, h("label", { for: id }, f.label)),
    help(id, helpText(f.raw, f)), body);
}

// A list of objects: one group per row (remove, move), and an "Add" button.
function rowsControl(ctx, f) {
  const rows = Array.isArray(ctx.value(f.path)) ? ctx.value(f.path) : [];
  const noun = ctx.layout.rowNoun[`${f.def}.${f.key}`] || humanize(f.key).toLowerCase();
  const ro = disabled(ctx, f);
  const itemNode = f.node.items;
  const groups = rows.map((row, i) => {
    const p = [...f.path, i];
    const name = `${noun.charAt(0).toUpperCase()}${noun.slice(1)} ${i + 1}`;
    const remove = ro ? null : h("button", { type: "button", class: "small secondary", "aria-label": `Remove ${noun} ${i + 1}`,
      onclick: () => ctx.change(f.path, rows.filter((_, j) => j !== i), f) }, "Remove");
    return h("fieldset", { class: "row", dataset: { path: pathKey(p) } }, h("legend", {}, name), remove,
      ...objectFields(ctx, itemNode, p), h("div", { class: "errslot" }));
  });
  const add = ro ? null : h("button", { type: "button", class: "small secondary",
    onclick: () => ctx.change(f.path, [...rows, {}], f) }, `Add ${noun}`);
  return fieldBox(f.path, "rows", h("fieldset", {}, h("legend", {}, f.label), help(fieldId(f.path), helpText(f.raw, f)), ...groups, add));
}

// Several alternatives: a picker of the variant (by the discriminator's value, else by the
// variant's title or type), then the chosen variant's own fields.
function unionControl(ctx, f) {
  const alts = (f.node.oneOf || f.node.anyOf).map((a) => ctx.reader.resolve(a));
  const tag = f.node.discriminator && f.node.discriminator.propertyName;
  const v = ctx.value(f.path);
  const nameOf = (a, i) => (tag && a.properties && a.properties[tag] ? String(a.properties[tag].const ?? (a.properties[tag].enum || [])[0]) : a.title || a.type || `option ${i + 1}`);
  const names = alts.map(nameOf);
  const picked = alts.findIndex((a) => (tag ? v && names[alts.indexOf(a)] === String(v[tag]) : matchesType(a, v)));
  const id = fieldId(f.path);
  const sel = h("select", { id: `${id}-variant`, disabled: disabled(ctx, f) }, h("option", { value: "" }, "— choose —"),
    ...names.map((n, i) => h("option", { value: String(i), selected: i === picked || undefined }, n)));
  sel.addEventListener("change", () => {
    const a = alts[Number(sel.value)];
    const fresh = !a ? undefined : kindOf(a) === "object" ? (tag ? { [tag]: names[Number(sel.value)] } : {}) : undefined;
    ctx.change(f.path, fresh, f);
  });
  const chosen = picked >= 0 ? renderGeneric(ctx, { ...f, node: alts[picked], label: f.label }) : null;
  return fieldBox(f.path, "union", h("label", { for: `${id}-variant` }, `${f.label}: kind`), sel, chosen);
}

function matchesType(a, v) {
  if (v === undefined || v === null) return false;
  const k = kindOf(a);
  return k === "object" ? typeof v === "object" && !Array.isArray(v) : fits(k, v) && (k !== "enum" || a.enum.includes(v));
}
