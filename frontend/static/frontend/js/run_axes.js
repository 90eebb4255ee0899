// The run page's x axes: a point's global step as global step, tokens seen, wall time or step
// within its stage (no DOM). Stages come from the summary; the tokens and wall-time maps from
// GET /api/runs/{id}/events/ (`axes`): tokens from the run's `train/tokens` series when it logs
// one, else batch_size x seq_len per step of each stage's plan; wall time from (step, time)
// samples of the stored points, extended by the socket batches' `sent_at`. A mode is offered
// only when its map is known.

export const X_MODES = [
  ["step", "global step"],
  ["tokens", "tokens seen"],
  ["time", "wall time"],
  ["stage", "step within stage"],
];

// Linear interpolation over sorted xs (extrapolated from the end segments).
function interp(xs, ys, x) {
  const n = xs.length;
  if (!n) return null;
  if (n === 1) return ys[0];
  let lo = 0;
  let hi = n - 1;
  if (x <= xs[0]) hi = 1;
  else if (x >= xs[n - 1]) lo = n - 2;
  else {
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] <= x) lo = mid; else hi = mid;
    }
  }
  const span = xs[hi] - xs[lo];
  return span ? ys[lo] + ((ys[hi] - ys[lo]) * (x - xs[lo])) / span : ys[lo];
}

export class RunAxes {
  constructor() {
    this.stages = []; // [{start_step, end_step, name}] in order
    this.tokensPlan = null; // [{start_step, end_step, tokens_per_step, before}] (plan)
    this.tokensKey = null; // the series that counts tokens, when the run logs one
    this.tokens = { steps: [], values: [] };
    this.clock = { steps: [], times: [] }; // times in ms
  }

  setStages(stages) { this.stages = stages.map((s) => ({ start_step: s.start_step, end_step: s.end_step, name: s.name })); }

  setAxes(axes) {
    const t = axes && axes.tokens;
    this.tokensKey = t && t.source === "series" ? t.key : null;
    this.tokensPlan = null;
    if (t && t.source === "plan") {
      let before = 0;
      this.tokensPlan = t.stages.map((s) => {
        const out = { ...s, before };
        before += (s.end_step - s.start_step) * s.tokens_per_step;
        return out;
      });
    }
    const c = axes && axes.clock;
    if (c) this.clock = { steps: c.steps.slice(), times: c.times.map((x) => x * 1000) };
  }

  // The run's own token counter (a full read or new points).
  addTokens(steps, values) {
    steps.forEach((s, i) => {
      const last = this.tokens.steps[this.tokens.steps.length - 1];
      if (last === undefined || s > last) { this.tokens.steps.push(s); this.tokens.values.push(values[i]); }
    });
  }

  // A socket batch: its last step was stored at about `sentAt` (unix seconds).
  extendClock(step, sentAt) {
    const c = this.clock;
    if (!c.steps.length || step <= c.steps[c.steps.length - 1]) return;
    c.steps.push(step);
    c.times.push(sentAt * 1000);
  }

  available() {
    const ok = {
      step: true,
      tokens: Boolean(this.tokensPlan || (this.tokensKey && this.tokens.steps.length > 1)),
      time: this.clock.steps.length > 1 && this.clock.times[this.clock.times.length - 1] > this.clock.times[0],
      stage: this.stages.length > 0,
    };
    return X_MODES.filter(([m]) => ok[m]).map(([m]) => m);
  }

  // Index of the stage a step belongs to (start_step < step <= end_step; step 0: stage 0).
  stageOf(step) {
    const st = this.stages;
    for (let i = 0; i < st.length; i += 1) if (step <= st[i].end_step) return i;
    return Math.max(0, st.length - 1);
  }

  tokensAt(step) {
    if (this.tokensPlan) {
      const p = this.tokensPlan[Math.min(this.stageOf(step), this.tokensPlan.length - 1)];
      return p.before + (step - p.start_step) * p.tokens_per_step;
    }
    return interp(this.tokens.steps, this.tokens.values, step);
  }

  // x of a global step in `mode` (wall time: ms since the epoch).
  toX(mode, step) {
    if (mode === "tokens") return this.tokensAt(step);
    if (mode === "time") return interp(this.clock.steps, this.clock.times, step);
    if (mode === "stage") {
      const st = this.stages[this.stageOf(step)];
      return st ? step - st.start_step : step;
    }
    return step;
  }

  // The global step at x (for a zoom window); null where it has no single answer (stage).
  fromX(mode, x) {
    if (mode === "step") return x;
    if (mode === "stage") return null;
    if (mode === "time") return interp(this.clock.times, this.clock.steps, typeof x === "string" ? Date.parse(`${x.replace(" ", "T")}Z`) : x);
    if (this.tokensPlan) {
      const p = [...this.tokensPlan].reverse().find((s) => x >= s.before) || this.tokensPlan[0];
      return p.start_step + (x - p.before) / p.tokens_per_step;
    }
    return interp(this.tokens.values, this.tokens.steps, x);
  }

  title(mode) {
    return { step: "global step", tokens: "tokens seen", time: "wall time (UTC)", stage: "step within stage" }[mode];
  }
}
