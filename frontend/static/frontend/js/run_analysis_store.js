// The run's analysis as the page knows it. The server keeps it up to date at ingest and sends
// it with every socket batch that changed it: `analysis` (the continual-learning metrics, as
// GET /api/runs/{id}/analysis/) and `run_analysis` (stability gaps and matrices, as
// GET /api/ui/runs/{id}/analysis/). The page reads both stored results once when it opens and
// after a reconnect (pushes may have been missed); a read that a push overtook is dropped.
// Nothing is re-read per batch.
import { getJSON } from "./api.js";

const DONE = ["succeeded", "skipped"];

export class AnalysisStore {
  // onChange({continual, boundaries}): the parts that changed (the others undefined).
  constructor(runId, onChange) {
    this.runId = runId;
    this.onChange = onChange;
    this.continual = null;
    this.boundaries = null;
    this.pushes = 0;
  }

  async load() {
    const before = this.pushes;
    const [continual, boundaries] = await Promise.all([
      getJSON(`/api/runs/${this.runId}/analysis/`), getJSON(`/api/ui/runs/${this.runId}/analysis/`)]);
    if (this.pushes === before) this._set(continual, boundaries);
  }

  // A socket batch: takes what it carries.
  push(msg) {
    if (!msg.analysis && !msg.run_analysis) return;
    this.pushes += 1;
    this._set(msg.analysis, msg.run_analysis);
  }

  _set(continual, boundaries) {
    if (continual) this.continual = continual;
    if (boundaries) this.boundaries = boundaries;
    this.onChange({ continual, boundaries });
  }
}

// The eval-set x stage-end matrix to draw for the eval chart's `metric` (perplexity shows
// loss): the rows of the stages finished now, read from the summary's `stages` (a stage
// finishes without a batch, so the page picks the rows itself). null when none is finished.
export function finishedMatrix(a, stages, metric) {
  const all = (a && a.boundary_matrices) || [];
  const m = all.find((x) => x.metric === (metric === "acc" ? "acc" : "loss")) || all[0];
  if (!m) return null;
  const rows = m.values.map((_, i) => i).filter((i) => stages[i] && DONE.includes(stages[i].state));
  if (!rows.length) return null;
  return { ...m, stages: rows.map((i) => m.stages[i]), values: rows.map((i) => m.values[i]) };
}
