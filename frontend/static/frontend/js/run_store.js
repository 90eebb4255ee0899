// The browser's copy of a run's series: the last step seen per key and the usual stride, so
// that appending is exactly-once (dedupe by step) and gaps are detected for catch-up.

export class SeriesStore {
  constructor() {
    this.last = new Map(); // key -> last step drawn
    this.stride = new Map(); // key -> smallest step difference seen
  }

  has(key) { return this.last.has(key); }
  keys() { return [...this.last.keys()]; }
  lastStep(key) { return this.last.has(key) ? this.last.get(key) : -1; }

  // Reset a key from a full (possibly downsampled) window read.
  reset(key, steps) {
    this.last.set(key, steps.length ? steps[steps.length - 1] : -1);
    this._learn(key, steps);
  }

  _learn(key, steps) {
    for (let i = 1; i < steps.length; i += 1) {
      const d = steps[i] - steps[i - 1];
      if (d > 0 && (!this.stride.has(key) || d < this.stride.get(key))) this.stride.set(key, d);
    }
  }

  // True when a batch starting at firstStep may have skipped points we never received.
  gapBefore(key, firstStep) {
    if (!this.last.has(key)) return true;
    const last = this.last.get(key);
    if (last < 0) return false; // known and empty at the last sync: nothing to miss yet
    const stride = this.stride.get(key);
    return stride === undefined ? false : firstStep - last > stride;
  }

  // Keep only points after the last step (sorted, one per step); record them as seen.
  merge(key, steps, values) {
    let last = this.lastStep(key);
    const order = steps.map((s, i) => i).sort((a, b) => steps[a] - steps[b]);
    const out = { steps: [], values: [] };
    for (const i of order) {
      if (steps[i] > last) {
        out.steps.push(steps[i]);
        out.values.push(values[i]);
        last = steps[i];
      }
    }
    if (out.steps.length) {
      const prev = this.lastStep(key);
      this._learn(key, prev >= 0 ? [prev, ...out.steps] : out.steps);
      this.last.set(key, last);
    }
    return out;
  }
}
