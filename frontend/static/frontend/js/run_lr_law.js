// The run page's LR-law panel: a stage selector (follows the running stage until the user picks
// one), the fit of GET /api/runs/{id}/lr-law/?stage=i over the stage's observed training loss.
// A running stage is refitted at most every REFRESH_MS (driven by the page's summary poll, not
// by socket batches); a finished stage is fitted once more when it finishes, then left alone.
import { getJSON } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { clearChart, drawLawFit, lawParams } from "./lr_law_ui.js";

const REFRESH_MS = 10000;

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
  update(stages, currentIndex) {
    const sig = (list) => list.map((s) => `${s.index}:${s.name}`).join("|");
    if (sig(stages) !== sig(this.stages)) {
      replaceChildren(this.sel, stages.map((s) => h("option", { value: s.index }, `${s.index + 1}. ${s.name}`)));
    }
    this.stages = stages;
    if (!this.userPicked && currentIndex !== null && currentIndex !== undefined) this.sel.value = String(currentIndex);
    this.refresh(false);
  }

  selected() {
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
      this.show(`Stage “${st.name}” has no training loss yet (${st.state}).`);
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
    this.updated.textContent = `fitted on ${fit.points} points up to step ${fit.fitted_steps[1]}` +
      (running ? ` · extrapolated to step ${fit.final_step} · refreshes every ${REFRESH_MS / 1000} s while the stage runs` : "") +
      (fit.warning ? ` · ⚠ ${fit.warning}` : "");
  }
}
