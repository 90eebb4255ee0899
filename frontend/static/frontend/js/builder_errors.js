// Validation errors ([path, message] pairs, paths like "stages.1.replay.0.ratio") shown all at
// once: in a list, and next to the field they are about (or the nearest enclosing one that
// the form shows), with the control marked invalid and described by its message.
import { h, replaceChildren } from "./dom.js";

function nearestBox(root, path) {
  const parts = path ? path.split(".") : [];
  for (let n = parts.length; n > 0; n -= 1) {
    const el = root.querySelector(`[data-path="${CSS.escape(parts.slice(0, n).join("."))}"]`);
    if (el) return el;
  }
  return null;
}

function slotOf(box) {
  return [...box.children].find((c) => c.classList.contains("errslot")) || box;
}

function controlOf(box) {
  return box.querySelector(":scope > input, :scope > select, :scope > fieldset, :scope > .check > input");
}

export function clearFieldErrors(root) {
  for (const el of root.querySelectorAll(".field-error")) el.remove();
  for (const el of root.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const el of root.querySelectorAll(".has-error")) el.classList.remove("has-error");
  for (const el of root.querySelectorAll("[data-error-for]")) {
    el.setAttribute("aria-describedby", el.dataset.errorFor);
    delete el.dataset.errorFor;
  }
}

export function showFieldErrors(root, lines) {
  clearFieldErrors(root);
  lines.forEach(([path, msg], i) => {
    const box = nearestBox(root, path);
    if (!box) return;
    const id = `err-${root.id}-${i}`;
    const exact = box.dataset.path === path;
    const text = exact ? msg : `${path.slice(box.dataset.path.length + 1)}: ${msg}`;
    slotOf(box).append(h("p", { class: "field-error error small", id, role: "alert" }, text));
    box.classList.add("has-error");
    for (let d = box.closest("details.more"); d; d = d.parentElement.closest("details.more")) d.open = true; // never hidden
    const card = box.closest(".stage-card");
    if (card) card.classList.add("has-error");
    const control = controlOf(box);
    if (control) {
      control.setAttribute("aria-invalid", "true");
      const before = control.getAttribute("aria-describedby") || "";
      if (!("errorFor" in control.dataset)) control.dataset.errorFor = before;
      control.setAttribute("aria-describedby", `${control.getAttribute("aria-describedby") || ""} ${id}`.trim());
    }
  });
}

// The list of every error (the "Validation" box), each with its path.
export function showErrorList(list, okLine, lines) {
  if (okLine) okLine.hidden = lines.length > 0;
  replaceChildren(list, lines.map(([path, msg]) => h("li", { dataset: { path } }, path ? h("code", {}, path) : null, path ? " " : null, msg)));
}
