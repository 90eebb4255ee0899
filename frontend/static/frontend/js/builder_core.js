// The pipeline builder: one plan document, edited by a form generated from the plan schema
// (plan-level fields and stage cards) and by a JSON view, kept in sync both ways. Every edit
// calls `onChange(plan)`; `showErrors(lines)` puts validation errors next to their fields and
// on the JSON. Used by the pipeline page and the fork page.
import { applies, objectFields } from "./builder_form.js";
import { clone, getAt, schemaReader, setAt, unsetAt } from "./builder_schema.js";
import { renderStages } from "./builder_stages.js";
import { builderLayout, WIDGETS } from "./builder_widgets.js";
import { showFieldErrors } from "./builder_errors.js";
import { createJsonView } from "./builder_json.js";

// Drop the fields of the object at `path` that no longer apply after a change (a schedule
// kind's parameters when the kind changes, digits options when the source does).
function prune(ctx, f) {
  if (!f || !f.objectPath || !f.objectNode) return;
  const obj = getAt(ctx.plan(), f.objectPath);
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return;
  const def = ctx.reader.defOf(f.objectNode);
  for (const key of Object.keys(obj)) if (!applies(ctx, def, key, obj)) delete obj[key];
}

function put(plan, path, value) {
  if (value === undefined) unsetAt(plan, path);
  else setAt(plan, path, value);
}

// The form's view of the builder's state `b` (see builder_form.js for what ctx offers).
function formContext(b, { sources, firstEditable, readOnlyPlan }) {
  const ctx = {
    reader: b.reader, sources, firstEditable,
    layout: builderLayout(b.reader),
    widgets: WIDGETS,
    openDetails: new Set(), // open "More options" boxes and other UI memory, by path
    refreshers: [],
    plan: () => b.doc,
    value: (path) => getAt(b.doc, path),
    readOnly: (path) => (readOnlyPlan && path[0] !== "stages") || (path[0] === "stages" && path[1] < firstEditable),
    input(path, value) {
      put(b.doc, path, value);
      for (const r of ctx.refreshers) r();
      changed(b, "form");
    },
    change(path, value, f, { focus } = {}) {
      put(b.doc, path, value);
      prune(ctx, f);
      render(b, { focus });
      changed(b, "form");
    },
  };
  return ctx;
}

function changed(b, from) {
  if (from !== "json" && b.json) b.json.show(b.doc);
  b.onChange(b.doc, from);
}

// The whole form again (after a structural change or a JSON edit), keeping the focus.
function render(b, { focus } = {}) {
  const active = document.activeElement;
  const inForm = active && active.id && ((b.planForm && b.planForm.contains(active)) || b.stagesRoot.contains(active));
  const keep = focus || (inForm ? active.id : null);
  b.ctx.refreshers = [];
  if (b.planForm) b.planForm.replaceChildren(...objectFields(b.ctx, b.reader.root, [], { skip: ["stages"] }));
  renderStages(b.ctx, b.stagesRoot);
  const el = keep && document.getElementById(keep);
  if (el) el.focus();
  showFormErrors(b, b.lastErrors);
}

function showFormErrors(b, lines) {
  if (b.planForm) showFieldErrors(b.planForm, lines.filter(([p]) => !p.startsWith("stages")));
  showFieldErrors(b.stagesRoot, lines.filter(([p]) => p === "stages" || p.startsWith("stages.")));
}

function jsonView(b, jsonRoot, { readOnly, onSyntaxError }) {
  const view = createJsonView(jsonRoot, {
    readOnly,
    onEdit(parsed) {
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        onSyntaxError("the plan must be a JSON object");
        return;
      }
      b.doc = parsed;
      render(b);
      changed(b, "json");
    },
    onSyntaxError,
  });
  view.show(b.doc);
  return view;
}

// options: schema, sources {builtin, datasets}, plan, planForm, stagesRoot, jsonRoot (none:
// no JSON view), firstEditable (stages before it read-only), readOnlyPlan (plan-level
// fields read-only), onChange(plan, from), onSyntaxError(message).
export function createBuilder(options) {
  const { schema, plan, planForm, stagesRoot, jsonRoot, onChange, onSyntaxError = () => {} } = options;
  const reader = schemaReader(schema);
  const b = { reader, doc: clone(plan), json: null, lastErrors: [], planForm, stagesRoot, onChange };
  b.ctx = formContext(b, { sources: options.sources, firstEditable: options.firstEditable || 0, readOnlyPlan: !!options.readOnlyPlan });
  if (jsonRoot) b.json = jsonView(b, jsonRoot, { readOnly: !!options.readOnlyPlan, onSyntaxError });
  render(b);
  return {
    reader,
    plan: () => b.doc,
    json: () => b.json,
    load(next) { b.doc = clone(next); render(b); changed(b, "load"); },
    showErrors(lines) {
      b.lastErrors = lines;
      showFormErrors(b, lines);
      if (b.json) b.json.showErrors(lines);
    },
  };
}
