// The run's name, tags and notes, edited in place (PATCH /api/runs/{id}/), and deleting a
// finished run (DELETE /api/runs/{id}/, after a confirm). Notes are Markdown rendered on the
// server with raw HTML escaped (GET /api/runs/{id}/notes/); the page still keeps only an
// allowlist of tags and attributes from that HTML, parsed in an inert document, before showing
// it (defence in depth: nothing the author typed becomes a tag or a handler). The run's plan
// (from the same GET) names the stages that grow the model: growthLabels.
import { deleteJSON, getJSON, patchJSON } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { errorText } from "./run_summary_ui.js";

const TAGS = new Set(["P", "STRONG", "EM", "CODE", "PRE", "UL", "OL", "LI", "A", "H1", "H2", "H3", "H4", "H5", "H6",
  "BLOCKQUOTE", "HR", "BR", "S", "DEL", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD"]);
const SAFE_HREF = /^(https?:|mailto:|\/|#)/i;

function cleanNode(node) {
  if (node.nodeType === Node.TEXT_NODE) return document.createTextNode(node.textContent);
  if (node.nodeType !== Node.ELEMENT_NODE) return null;
  const kids = [...node.childNodes].map(cleanNode).filter(Boolean);
  if (!TAGS.has(node.tagName)) return kids.length ? h("span", {}, kids) : null;
  const attrs = {};
  const href = node.getAttribute("href");
  if (node.tagName === "A" && href && SAFE_HREF.test(href)) Object.assign(attrs, { href, rel: "nofollow noopener noreferrer" });
  const align = node.getAttribute("style");
  if ((node.tagName === "TD" || node.tagName === "TH") && /^text-align:(left|right|center)$/.test(align || "")) attrs.style = align;
  return h(node.tagName.toLowerCase(), attrs, kids);
}

// Server-rendered notes HTML -> DOM nodes of allowed tags only.
export function safeNotes(html) {
  const doc = new DOMParser().parseFromString(html, "text/html");
  return [...doc.body.childNodes].map(cleanNode).filter(Boolean);
}

export class RunMeta {
  constructor(runId, { canWrite, onError }) {
    this.url = `/api/runs/${runId}/`;
    this.canWrite = canWrite;
    this.onError = onError;
    this.tags = [];
    this.notes = "";
    this.el = (id) => document.getElementById(id);
    this._bindName();
    this._bindTags();
    this._bindNotes();
  }

  async load() {
    const run = await getJSON(this.url);
    this.plan = run.plan; // null: a free-form run
    this.tags = run.tags;
    this._renderTags();
    await this._loadNotes();
  }

  async _patch(body, status) {
    status.textContent = "saving…";
    try {
      const run = await patchJSON(this.url, body);
      status.textContent = "saved";
      return run;
    } catch (e) {
      status.textContent = errorText(e);
      return null;
    }
  }

  // ---------------------------------------------------------------- name
  _bindName() {
    const [edit, form, input] = [this.el("rename-run"), this.el("rename-form"), this.el("rename-input")];
    edit.hidden = !this.canWrite;
    edit.addEventListener("click", () => {
      input.value = this.el("run-name-text").textContent;
      form.hidden = false;
      input.focus();
    });
    this.el("rename-cancel").addEventListener("click", () => { form.hidden = true; });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const run = await this._patch({ name: input.value.trim() }, this.el("rename-status"));
      if (!run) return;
      this.el("run-name-text").textContent = run.name;
      document.title = `${run.name} · Stagewise`;
      form.hidden = true;
    });
  }

  // ---------------------------------------------------------------- tags
  _bindTags() {
    const form = this.el("tag-form");
    form.hidden = !this.canWrite;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = this.el("tag-input");
      const tag = input.value.trim();
      if (!tag || this.tags.includes(tag)) { input.value = ""; return; }
      if (await this._saveTags([...this.tags, tag])) input.value = "";
    });
  }

  async _saveTags(tags) {
    const run = await this._patch({ tags }, this.el("tag-status"));
    if (!run) return false;
    this.tags = run.tags;
    this._renderTags();
    return true;
  }

  _renderTags() {
    replaceChildren(this.el("run-tags"), this.tags.map((t) => h("span", { class: "tag", dataset: { tag: t } }, t,
      this.canWrite ? h("button", { type: "button", class: "tag-remove", title: `remove tag ${t}`, "aria-label": `remove tag ${t}`,
        onclick: () => this._saveTags(this.tags.filter((x) => x !== t)) }, "×") : null)));
  }

  // ---------------------------------------------------------------- notes
  _bindNotes() {
    const [edit, form, input] = [this.el("notes-edit"), this.el("notes-form"), this.el("notes-input")];
    edit.hidden = !this.canWrite;
    edit.addEventListener("click", () => {
      input.value = this.notes;
      form.hidden = false;
      edit.hidden = true;
      input.focus();
    });
    this.el("notes-cancel").addEventListener("click", () => { form.hidden = true; edit.hidden = false; });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!(await this._patch({ notes: input.value }, this.el("notes-status")))) return;
      form.hidden = true;
      edit.hidden = false;
      await this._loadNotes();
    });
  }

  async _loadNotes() {
    const { notes, html } = await getJSON(`${this.url}notes/`);
    this.notes = notes;
    const view = this.el("notes-view");
    replaceChildren(view, notes ? safeNotes(html) : [h("p", { class: "muted" }, "No notes yet.")]);
  }
}

const SIZE_LAYERS = { tiny: 2, small: 4, base: 6 }; // trainers/plan.py SIZES

// Per stage of a plan: the label of the growth at its start ("grown ×2 (identity, 2 → 4
// layers)") or null. Layer counts only where the plan gives them (n_layer or a size; not for a
// model.path).
export function growthLabels(plan) {
  const model = (plan && plan.model) || {};
  let layers = model.n_layer ?? (model.path ? null : SIZE_LAYERS[model.size || "tiny"] ?? null);
  return ((plan && plan.stages) || []).map((st) => {
    if (!st.grow) return null;
    const factor = st.grow.factor ?? 2;
    const before = layers;
    layers = layers === null ? null : layers * factor;
    const counts = before === null ? "" : `, ${before} → ${layers} layers`;
    return `grown ×${factor} (${st.grow.method}${counts})`;
  });
}

// The delete button: shown to members once the run is finished; a 409 (forks of it exist)
// names them.
export function bindDelete(runId, { canWrite, log }) {
  const btn = document.getElementById("delete-run");
  btn.addEventListener("click", async () => {
    if (!window.confirm("Delete this run with its points, checkpoints and analysis? This cannot be undone.")) return;
    try {
      await deleteJSON(`/api/runs/${runId}/`);
      window.location.href = "/";
    } catch (e) {
      const runs = (e.payload && e.payload.runs) || [];
      document.getElementById("run-error").textContent = errorText(e) + (runs.length ? ` (forks: ${runs.map((r) => `#${r}`).join(", ")})` : "");
      log.add("delete refused");
    }
  });
  return (finished) => { btn.hidden = !canWrite || !finished; };
}
