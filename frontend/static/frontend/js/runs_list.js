// Runs list: filters and page in the URL, rows refreshed every few seconds without reload.
import { getJSON } from "./api.js";
import { fmtDuration, fmtNum, fmtTime, h, replaceChildren } from "./dom.js";

const form = document.getElementById("run-filters");
const tbody = document.querySelector("#runs-table tbody");
const status = document.getElementById("runs-status");
const params = new URLSearchParams(window.location.search);
let page = Number(params.get("page") || 1);
if (params.get("ordering")) form.elements.ordering.value = params.get("ordering");

function query() {
  const q = new URLSearchParams();
  for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
  if (page > 1) q.set("page", page);
  return q;
}

function row(r) {
  const p = r.progress;
  const pct = `${(p.fraction * 100).toFixed(0)}%`;
  return h("tr", { dataset: { run: r.id } },
    h("td", {}, h("a", { href: `/runs/${r.id}/` }, r.name), " ", h("span", { class: "muted" }, `#${r.id}`),
      r.parent ? h("div", { class: "muted small" }, "fork of ", h("a", { href: `/runs/${r.parent}/` }, r.parent_name || `#${r.parent}`)) : null),
    h("td", {}, h("span", { class: `badge state-${r.state}` }, r.state),
      r.external ? h("span", { class: "badge external", title: "trained outside Stagewise" }, "external") : null,
      liveness(r)),
    h("td", { class: "progress-cell" },
      h("div", { class: "progress", title: `${p.step} / ${p.total} steps` }, h("div", { class: "bar", style: `width:${pct}` })),
      h("div", { class: "muted small" }, p.stage_index === null ? "" : `${p.stage_name} (${p.stage_index + 1}/${p.stage_count}) · ${p.step}/${p.total}`)),
    h("td", {}, r.state === "running" ? fmtDuration(p.eta_seconds) : "—"),
    h("td", {}, r.pipeline_name || "—"),
    ...analysisCells(r.analysis),
    h("td", {}, r.queue),
    h("td", {}, r.tags.map((t) => h("span", { class: "tag" }, t))),
    h("td", { class: "small" }, fmtTime(r.created_at)));
}

// A running external run: how long since its last report, marked once the server calls it stale.
function fmtAgo(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}
function liveness(r) {
  if (!r.external || r.state !== "running" || r.last_report_age === null) return null;
  const ago = fmtAgo(r.last_report_age);
  if (r.stale) {
    return h("div", { class: "small last-report stale", dataset: { stale: "true" },
      title: "the job may be gone; cancel it if so" }, `⚠ no report for ${ago} — the job may be gone; cancel it if so`);
  }
  return h("div", { class: "muted small last-report", dataset: { stale: "false" } },
    r.last_report_at ? `last report ${ago} ago` : "no report yet");
}

// BWT / FWT / average forgetting from the run's continual-learning analysis ("—" before evals).
function analysisCells(a) {
  const title = a ? `on eval ${a.metric}` : "no eval points yet";
  return ["bwt", "fwt", "avg_forgetting"].map((k) =>
    h("td", { class: "num", dataset: { metric: k }, title }, fmtNum(a ? a[k] : null, 3)));
}

async function refresh() {
  const q = query();
  history.replaceState(null, "", `?${q}`);
  let data;
  try {
    data = await getJSON(`/api/ui/runs/?${q}`);
  } catch (e) {
    status.textContent = `Could not load runs: ${e.message}. Retrying…`;
    return;
  }
  status.textContent = `${data.count} run${data.count === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`;
  replaceChildren(tbody, data.results.map(row));
  document.getElementById("runs-empty").hidden = data.count > 0;
  const pager = document.getElementById("runs-pager");
  const btn = (label, p, disabled) => h("button", { class: "small", disabled, onclick: () => { page = p; refresh(); } }, label);
  replaceChildren(pager, data.pages > 1 ? [btn("‹ Prev", data.page - 1, data.page <= 1),
    h("span", {}, ` page ${data.page} of ${data.pages} `), btn("Next ›", data.page + 1, data.page >= data.pages)] : []);
}

let typing = null;
form.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { page = 1; refresh(); }, 250); });
form.addEventListener("submit", (e) => { e.preventDefault(); page = 1; refresh(); });
refresh();
setInterval(() => { if (!document.hidden) refresh(); }, 3000);
