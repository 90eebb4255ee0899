// The run page's LR-law panel: a stage selector (follows the running stage until the user picks
// one; "whole run" fits every stage's points at once), the fit of
// GET /api/runs/{id}/lr-law/?stage=i (or stage=all) over the observed training loss.
// A running stage is refitted at most every REFRESH_MS (driven by the page's summary poll, not
// by socket batches); a finished stage is fitted once more when it finishes, then left alone.
import { getJSON } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { clearChart, drawLawFit, lawParams } from "./lr_law_ui.js";

const REFRESH_MS = 10000;
const WHOLE_RUN = "all";
const DONE = ["succeeded", "skipped"];

// The whole run as one pseudo-stage: its step range, and running / succeeded / the state of
// its first unfinished stage.
function wholeRun(stages) {
  if (!stages.length) return null;
  const lasts = stages.map((s) => s.last_step).filter((x) => x !== null && x !== undefined);
  const open = stages.find((s) => !DONE.includes(s.state));
  const state = stages.some((s) => s.state === "running") ? "running" : (open ? open.state : "succeeded");
  return { index: WHOLE_RUN, name: "whole run", state, start_step: stages[0].start_step,
    end_step: stages[stages.length - 1].end_step, last_step: lasts.length ? Math.max(...lasts) : null };
}

export class LrLawPanel {
  constructor(runId, { onError } = {}) {
    this.base = `/api/runs/${runId}`;
    this.sel = document.getElementById("lr-law-stage");
    this.div = document.getElementById("chart-lr-law");
    this.msg = document.getElementById("lr-law-message");
    this.params = document.getElementById("lr-law-params");
    this.updated = document.getElementById("lr-law-updated");
    this.onError = onError || (() => {});
    this.stages = [];
    this.userPicked = false;
    this.loaded = null; // {index, state, lastStep, at} of the last fit request
    this.seq = 0;
    clearChart(this.div);
    this.sel.addEventListener("change", () => { this.userPicked = true; this.refresh(true); });
  }

  // From every summary load: the stages (state, last_step) and the current stage index.
  update(stages, currentIndex, freeForm = false) {
    if (freeForm) { // no planned schedule to extrapolate: say so instead of asking the server
      this.show("A free-form run (logged without a plan) has no planned LR schedule: the law extrapolates one, so it fits runs logged with a plan.");
      return;
    }
    const sig = (list) => list.map((s) => `${s.index}:${s.name}`).join("|");
    if (sig(stages) !== sig(this.stages)) {
      const options = stages.map((s) => h("option", { value: s.index }, `${s.index + 1}. ${s.name}`));
      if (stages.length > 1) options.push(h("option", { value: WHOLE_RUN }, "whole run"));
      replaceChildren(this.sel, options);
    }
    this.stages = stages;
    if (!this.userPicked && currentIndex !== null && currentIndex !== undefined) this.sel.value = String(currentIndex);
    this.refresh(false);
  }

  selected() {
    if (this.sel.value === WHOLE_RUN) return wholeRun(this.stages);
    return this.stages.find((s) => String(s.index) === this.sel.value) || null;
  }

  refresh(force) {
    const st = this.selected();
    if (!st) return;
    const prev = this.loaded;
    const same = prev && prev.index === st.index;
    if (!force && same) {
      if (prev.state === st.state && prev.lastStep === st.last_step) return; // nothing new
      if (st.state === "running" && prev.state === "running" && Date.now() - prev.at < REFRESH_MS) return;
    }
    this.loaded = { index: st.index, state: st.state, lastStep: st.last_step, at: Date.now() };
    if (st.last_step === null && !["running", "succeeded"].includes(st.state)) {
      this.show(`${st.index === WHOLE_RUN ? "The run" : `Stage “${st.name}”`} has no training loss yet (${st.state}).`);
      return;
    }
    this.load(st);
  }

  show(message) {
    this.msg.textContent = message;
    this.msg.hidden = !message;
    this.div.hidden = !!message; // an empty chart under the message says nothing
    if (message) {
      replaceChildren(this.params, []);
      this.updated.textContent = "";
      clearChart(this.div);
    }
  }

  async load(st) {
    const mine = ++this.seq;
    const key = encodeURIComponent("train/loss");
    const obsUrl = `${this.base}/series/?keys=${key}&min_step=${st.start_step + 1}&max_step=${st.end_step}&max_points=1000`;
    let fit, observed;
    try {
      [fit, { series: { "train/loss": observed } = {} }] = await Promise.all([
        getJSON(`${this.base}/lr-law/?stage=${st.index}`), getJSON(obsUrl)]);
    } catch (e) {
      if (mine !== this.seq) return;
      if (e.status === 400) {
        const running = st.state === "running";
        this.show(`${running ? "Not enough data yet" : "Cannot fit this stage"}: ${e.message}.`);
      } else {
        this.show("Could not load the fit.");
        this.onError(e);
      }
      return;
    }
    if (mine !== this.seq) return;
    this.show("");
    drawLawFit(this.div, fit, observed || { steps: [], values: [] });
    replaceChildren(this.params, lawParams(fit));
    const running = st.state === "running";
    this.updated.textContent = `fitted on ${fit.points} points, steps ${fit.fitted_steps[0]}–${fit.fitted_steps[1]} (warm-up left out)` +
      (running ? ` · extrapolated to step ${fit.final_step} · refreshes every ${REFRESH_MS / 1000} s while the stage runs` : "") +
      (fit.warning ? ` · ⚠ ${fit.warning}` : "");
  }
}
