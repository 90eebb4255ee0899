// Runs list: filters and page in the URL, rows refreshed every few seconds without reload,
// each row with a sparkline of its training loss: one request for the whole page
// (GET /api/series/), repeated only every SPARK_EVERY_MS or when the page shows other runs.
import { getJSON } from "./api.js";
import { fmtDuration, fmtNum, fmtTime, h, replaceChildren } from "./dom.js";

const SPARK_KEY = "train/loss";
const SPARK_POINTS = 60;
const SPARK_EVERY_MS = 15_000;
const SPARK_MAX_RUNS = 50; // the bulk endpoint's bound per request
const SVG = "http://www.w3.org/2000/svg";
const sparks = new Map(); // run id -> its line
let sparkIds = "";
let sparkAt = 0;

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
    h("td", {}, h("a", { href: `/runs/${r.id}/` }, r.name), " ", h("span", { class: "muted" }, `#${r.id}`), sparkline(r.id),
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

// The run's training loss as a small line (nothing before its first points).
function sparkline(id) {
  const line = sparks.get(id);
  if (!line || line.steps.length < 2) return null;
  const [w, ht] = [90, 18];
  const xs = line.steps, ys = line.values;
  const [x0, x1] = [xs[0], xs[xs.length - 1]];
  const [lo, hi] = [Math.min(...ys), Math.max(...ys)];
  const pts = xs.map((x, i) => `${((x - x0) / (x1 - x0 || 1)) * w},${ht - 1 - ((ys[i] - lo) / (hi - lo || 1)) * (ht - 2)}`);
  const svg = document.createElementNS(SVG, "svg");
  for (const [k, v] of Object.entries({ width: w, height: ht, class: "spark", "aria-label": `${SPARK_KEY} sparkline`, style: "vertical-align: middle; margin-left: .4rem" })) svg.setAttribute(k, v);
  const pl = document.createElementNS(SVG, "polyline");
  for (const [k, v] of Object.entries({ points: pts.join(" "), fill: "none", stroke: "#2f6fde", "stroke-width": 1.2 })) pl.setAttribute(k, v);
  svg.append(pl);
  const title = document.createElementNS(SVG, "title");
  title.textContent = `${SPARK_KEY}: ${fmtNum(ys[ys.length - 1])} at step ${xs[xs.length - 1]}`;
  svg.append(title);
  return svg;
}

// Into the rows on the page now (a later refresh may have drawn them since the request).
function drawSparks() {
  for (const tr of tbody.querySelectorAll("tr[data-run]")) {
    const svg = sparkline(Number(tr.dataset.run));
    const old = tr.querySelector("svg.spark");
    if (svg && old) old.replaceWith(svg);
    else if (svg) tr.firstElementChild.querySelector(".muted").after(svg);
  }
}

// The sparklines of the shown runs, in one request per 50 runs; true when they changed.
async function refreshSparks(ids) {
  const key = ids.join(",");
  if (!ids.length || (key === sparkIds && Date.now() - sparkAt < SPARK_EVERY_MS)) return false;
  sparkIds = key;
  sparkAt = Date.now();
  for (let i = 0; i < ids.length; i += SPARK_MAX_RUNS) {
    const part = ids.slice(i, i + SPARK_MAX_RUNS).join(",");
    const body = await getJSON(`/api/series/?runs=${part}&keys=${encodeURIComponent(SPARK_KEY)}&max_points=${SPARK_POINTS}&lineage=true`);
    for (const r of body.runs) sparks.set(r.run, r.series[SPARK_KEY]);
  }
  return true;
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
  refreshSparks(data.results.map((r) => r.id)).then((changed) => { if (changed) drawSparks(); })
    .catch(() => {}); // a sparkline is a nicety: the rows stay without one
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
