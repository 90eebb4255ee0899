// The run page's head and side panels, drawn from GET /api/ui/runs/{id}/ (the summary): state
// badge, progress and ETA, stage timeline, an external run's liveness, the cancel button,
// checkpoints with a "fork from here" link (the fork page, /runs/{id}/fork/{checkpoint}/); the
// live events list; error lines.
import { ApiError, errorLines } from "./api.js";
import { fmtBytes, fmtDuration, h, replaceChildren } from "./dom.js";

const FINISHED = ["succeeded", "failed", "canceled"];

// An API error's field reasons on one line.
export function errorText(e) {
  return errorLines(e).map(([k, m]) => (k ? `${k}: ${m}` : m)).join("; ");
}

// fetch() rejects with a TypeError when no answer came at all (a server restarting, a
// network outage): said as such, and cleared by the next answer (clearNetworkError). A 503
// (the database away; runs/middleware.py) passes the same way.
function isNetworkError(e) {
  return e instanceof TypeError && /fetch|network/i.test(e.message);
}

export function showError(e) {
  const el = document.getElementById("run-error");
  const network = isNetworkError(e);
  el.textContent = e instanceof ApiError ? errorText(e)
    : network ? "The server did not answer (restarting or unreachable); retrying." : String(e);
  el.dataset.network = network || (e instanceof ApiError && e.status === 503) ? "1" : "";
}

export function clearNetworkError() {
  const el = document.getElementById("run-error");
  if (el.dataset.network === "1") { el.textContent = ""; el.dataset.network = ""; }
}

export class EventLog {
  constructor(list) { this.list = list; }

  add(text, kind = "") {
    this.list.prepend(h("li", { class: kind }, h("time", {}, new Date().toLocaleTimeString()), " ", text));
  }

  // A socket event ({type: "run.event", event, ...details}) as one line.
  addEvent(msg) {
    const detail = Object.entries(msg).filter(([k]) => !["type", "run", "event"].includes(k))
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    this.add(`${msg.event}${detail ? ` (${detail})` : ""}`, `event-${msg.event}`);
  }
}

// An external run's only sign of life is its reports: how long ago the last one came, and a
// warning once that is past the server's stale threshold (the run is not failed for it).
function fmtAgo(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

function renderLiveness(s) {
  const last = document.getElementById("run-last-report");
  const stale = document.getElementById("run-stale");
  if (!last || !stale) return;
  const show = s.external && s.state === "running" && s.last_report_age !== null;
  last.hidden = !show;
  stale.hidden = !(show && s.stale);
  if (!show) return;
  last.textContent = s.last_report_at ? `last report ${fmtAgo(s.last_report_age)} ago` : "no report yet";
  last.title = s.last_report_at ? new Date(s.last_report_at).toLocaleString() : "";
  last.classList.toggle("stale", s.stale);
  stale.textContent = `⚠ no report for ${fmtAgo(s.last_report_age)} — the job may be gone; cancel it if so`;
}

function renderProgress(s) {
  const badge = document.getElementById("run-state");
  badge.textContent = s.state;
  badge.className = `badge state-${s.state}`;
  const p = s.progress;
  document.getElementById("run-progress-bar").style.width = `${(p.fraction * 100).toFixed(1)}%`;
  document.getElementById("run-progress-text").textContent =
    `stage ${p.stage_index + 1}/${p.stage_count} (${p.stage_name}) · step ${p.step} of ${p.total}` +
    (p.eta_seconds !== null ? ` · ETA ${fmtDuration(p.eta_seconds)}` : "");
  if (s.error) document.getElementById("run-error").textContent = s.error;
}

function renderTimeline(s) {
  const total = s.progress.total || 1;
  replaceChildren(document.getElementById("timeline"), s.stages.map((st) => {
    const done = st.state === "succeeded" || st.state === "skipped" ? st.end_step : (st.last_step ?? st.start_step);
    const frac = Math.max(0, Math.min(1, (done - st.start_step) / (st.end_step - st.start_step)));
    return h("div", { class: `stage state-${st.state}`, style: `flex:${(st.end_step - st.start_step) / total}`,
      title: `${st.name}: steps ${st.start_step + 1}–${st.end_step} (${st.state})` },
    h("div", { class: "stage-fill", style: `width:${(frac * 100).toFixed(1)}%` }),
    h("span", { class: "stage-name" }, st.name), h("span", { class: "stage-state" }, st.state));
  }));
}

function renderCheckpoints(s, canWrite) {
  const ckpts = s.checkpoints;
  document.getElementById("ckpt-empty").hidden = ckpts.length > 0;
  replaceChildren(document.querySelector("#ckpt-table tbody"), ckpts.map((c) => h("tr", {},
    h("td", {}, c.step), h("td", {}, s.stages[c.stage_index]?.name ?? c.stage_index),
    h("td", {}, c.stage_end ? "stage end" : "periodic"), h("td", {}, fmtBytes(c.size_bytes)),
    h("td", {}, canWrite ? h("a", { class: "button small fork-btn", dataset: { ckpt: c.id },
      href: `/runs/${s.id}/fork/${c.id}/` }, "Fork from here") : ""))));
}

export class SummaryView {
  // log: an EventLog (state changes are logged).
  constructor({ canWrite, log }) {
    this.canWrite = canWrite;
    this.log = log;
    this.seen = new Map(); // "run" or stage index -> the state last drawn
  }

  _logChanges(s) {
    const prevRun = this.seen.get("run");
    if (prevRun && prevRun !== s.state) this.log.add(`run ${s.state}`, `state-${s.state}`);
    this.seen.set("run", s.state);
    for (const st of s.stages) {
      const prev = this.seen.get(st.index);
      if (prev !== undefined && prev !== st.state) this.log.add(`stage ${st.name}: ${st.state}`);
      this.seen.set(st.index, st.state);
    }
  }

  render(s) {
    this._logChanges(s);
    renderProgress(s);
    renderLiveness(s);
    renderTimeline(s);
    document.getElementById("cancel-run").hidden = !this.canWrite || FINISHED.includes(s.state);
    renderCheckpoints(s, this.canWrite);
  }
}

export const isFinished = (s) => FINISHED.includes(s.state);
