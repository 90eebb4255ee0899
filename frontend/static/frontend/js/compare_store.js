// The compare page's state: the selection (runs, keys, x mode, EMA, log y, grouping), kept
// in the URL so that a reload or a shared link restores everything, and the runs read so far.
// Two requests whatever the number of runs: the runs' details and keys (GET /api/ui/compare/)
// and every missing line of every run (GET /api/series/, each line downsampled by the server).
// A fork's curves include the history it shares with its ancestors (lineage=true).
import { getJSON } from "./api.js";

export const MAX_RUNS = 50; // per request (the API's bound); a larger selection takes more
export const MAX_KEYS = 20;
export const MAX_POINTS = 1500;
export const MODES = ["global", "stage", "from-stage", "tokens"]; // compare_traces.js says what each is
export const GROUPS = ["none", "tag", "pipeline", "param"];
export const BANDS = ["std", "minmax"];

const ids = (v) => (v || "").split(",").filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0);
const oneOf = (v, allowed, dflt) => (allowed.includes(v) ? v : dflt);

export function selectionFromUrl(search) {
  const p = new URLSearchParams(search);
  return {
    runs: [...new Set(ids(p.get("runs")))],
    keys: (p.get("keys") || "").split(",").filter(Boolean),
    mode: oneOf(p.get("mode"), MODES, "global"),
    stage: Math.max(0, Number.parseInt(p.get("stage") || "0", 10) || 0), // mode=from-stage: this stage's start at 0
    ema: Math.min(0.99, Math.max(0, Number(p.get("ema") || 0) || 0)),
    logy: p.get("logy") === "1",
    group: oneOf(p.get("group"), GROUPS, "none"),
    param: p.get("param") || "", // group=param: the config field whose value groups
    band: oneOf(p.get("band"), BANDS, "std"),
  };
}

export function urlQuery(state) {
  const q = new URLSearchParams();
  if (state.runs.length) q.set("runs", state.runs.join(","));
  if (state.keys.length) q.set("keys", state.keys.join(","));
  if (state.mode !== "global") q.set("mode", state.mode);
  if (state.mode === "from-stage") q.set("stage", state.stage);
  if (state.ema) q.set("ema", state.ema);
  if (state.logy) q.set("logy", "1");
  if (state.group !== "none") q.set("group", state.group);
  if (state.group === "param" && state.param) q.set("param", state.param);
  if (state.group !== "none" && state.band !== "std") q.set("band", state.band);
  return q.toString().replaceAll("%2C", ",").replaceAll("%2F", "/");
}

export function syncUrl(state) {
  history.replaceState(null, "", `?${urlQuery(state)}`);
}

export function toggle(list, v, on) {
  const i = list.indexOf(v);
  if (on && i < 0) list.push(v);
  if (!on && i >= 0) list.splice(i, 1);
}

function chunks(list, n) {
  const out = [];
  for (let i = 0; i < list.length; i += n) out.push(list.slice(i, i + n));
  return out;
}

export class CompareStore {
  constructor() {
    this.runs = new Map(); // run id -> {detail, keys, series: Map(key -> line)}
    this.missing = new Set(); // asked runs the server does not show (gone, or another team's)
  }

  get(id) { return this.runs.get(id); }

  // The selected runs that were found, in selection order (their colours follow it).
  selected(state) { return state.runs.map((id) => this.runs.get(id)).filter(Boolean); }

  async ensureRuns(runIds) {
    const todo = runIds.filter((id) => !this.runs.has(id) && !this.missing.has(id));
    for (const part of chunks(todo, MAX_RUNS)) {
      const body = await getJSON(`/api/ui/compare/?runs=${part.join(",")}`);
      for (const d of body.runs) this.runs.set(d.id, { detail: d, keys: d.keys, series: new Map() });
      for (const id of body.missing) this.missing.add(id);
    }
  }

  // Every line of `keys` the selected runs have and that is not read yet, in one request
  // (more only past the API's bounds of runs or keys per request).
  async ensureSeries(runIds, keys) {
    const need = runIds.map((id) => this.runs.get(id)).filter((c) => c && keys.some((k) => c.keys.includes(k) && !c.series.has(k)));
    if (!need.length) return;
    const wanted = [...new Set(need.flatMap((c) => keys.filter((k) => c.keys.includes(k) && !c.series.has(k))))];
    for (const runPart of chunks(need.map((c) => c.detail.id), MAX_RUNS)) {
      for (const keyPart of chunks(wanted, MAX_KEYS)) {
        const q = `runs=${runPart.join(",")}&keys=${keyPart.map(encodeURIComponent).join(",")}&max_points=${MAX_POINTS}&lineage=true`;
        const body = await getJSON(`/api/series/?${q}`);
        for (const r of body.runs) {
          const c = this.runs.get(r.run);
          for (const [k, line] of Object.entries(r.series)) c.series.set(k, line);
        }
      }
    }
  }
}
