// The plan as JSON in a real editor (CodeMirror 6, bundled in ../vendor/codemirror.js):
// syntax highlighting, JSON syntax errors as you type, and the server's schema errors marked
// on the property they are about. `onEdit(plan)` is called with each edit that parses to an
// object; `show(plan)` puts the form's plan in the editor without calling it back.
import { basicSetup, EditorView, ensureSyntaxTree, json, jsonParseLinter, lintGutter, setDiagnostics, syntaxTree } from "../vendor/codemirror.js";

const VALUE_NODES = new Set(["Object", "Array", "String", "Number", "True", "False", "Null"]);

function children(node) {
  const out = [];
  for (let c = node.firstChild; c; c = c.nextSibling) out.push(c);
  return out;
}

// The syntax node of a path's value ("stages.1.replay.0.ratio"), or the deepest one found
// on the way, with the property node it belongs to (the range to mark).
function locate(state, path) {
  const text = (n) => state.doc.sliceString(n.from, n.to);
  const tree = ensureSyntaxTree(state, state.doc.length, 500) || syntaxTree(state);
  let node = children(tree.topNode).find((c) => VALUE_NODES.has(c.name));
  let mark = node;
  for (const part of path ? path.split(".") : []) {
    if (!node) break;
    let next = null;
    if (node.name === "Object") {
      const prop = children(node).find((c) => c.name === "Property" && safeParse(text(c.firstChild)) === part);
      if (prop) { next = children(prop).reverse().find((c) => VALUE_NODES.has(c.name)); mark = prop.firstChild; }
    } else if (node.name === "Array") {
      next = children(node).filter((c) => VALUE_NODES.has(c.name))[Number(part)] || null;
      if (next) mark = next;
    }
    if (!next) break;
    node = next;
  }
  if (mark && VALUE_NODES.has(mark.name) && (mark.name === "Object" || mark.name === "Array")) return { from: mark.from, to: mark.from + 1 };
  return mark ? { from: mark.from, to: mark.to } : { from: 0, to: 0 };
}

function safeParse(s) {
  try { return JSON.parse(s); } catch { return null; }
}

export function createJsonView(parent, { onEdit, onSyntaxError, readOnly = false }) {
  let quiet = false;
  const parseLint = jsonParseLinter();
  const view = new EditorView({
    parent,
    extensions: [
      basicSetup,
      json(),
      lintGutter(),
      EditorView.editable.of(!readOnly),
      EditorView.contentAttributes.of({ id: "plan-json", "aria-label": "plan JSON" }),
      EditorView.updateListener.of((u) => {
        if (!u.docChanged || quiet) return;
        const text = u.state.doc.toString();
        let plan;
        try { plan = JSON.parse(text); } catch (e) {
          view.dispatch(setDiagnostics(u.state, parseLint(view)));
          onSyntaxError(`JSON syntax: ${e.message}`);
          return;
        }
        onEdit(plan);
      }),
    ],
  });
  return {
    view,
    text: () => view.state.doc.toString(),
    show(plan) {
      const text = JSON.stringify(plan, null, 2);
      if (text === view.state.doc.toString()) return;
      quiet = true;
      try { view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } }); } finally { quiet = false; }
    },
    // The server's errors, each marked where its path points in the current text.
    showErrors(lines) {
      const diags = lines.map(([path, message]) => ({ ...locate(view.state, path), severity: "error", message: path ? `${path}: ${message}` : message }));
      view.dispatch(setDiagnostics(view.state, diags));
    },
  };
}
