// The tools above each run-page chart: x axis (only the modes the run's axes can map:
// run_axes.js), EMA smoothing (restarting at stage boundaries) and log y. The elements are
// `#<name>-x`, `#<name>-smooth` (with `#<name>-smooth-value`) and `#<name>-logy`.
import { h, replaceChildren } from "./dom.js";
import { X_MODES } from "./run_axes.js";

export class ChartTools {
  // getChart(): the chart the tools drive now (the eval chart is replaced on a metric change).
  constructor(name, getChart, axes) {
    this.getChart = getChart;
    this.axes = axes;
    this.x = document.getElementById(`${name}-x`);
    this.smooth = document.getElementById(`${name}-smooth`);
    this.smoothValue = document.getElementById(`${name}-smooth-value`);
    this.logy = document.getElementById(`${name}-logy`);
    this.modes = "";
    this.x.addEventListener("change", () => this.getChart().setView({ x: this.x.value }));
    this.smooth.addEventListener("input", () => {
      this.smoothValue.textContent = Number(this.smooth.value).toFixed(2);
      this.getChart().setView({ smooth: Number(this.smooth.value) });
    });
    this.logy.addEventListener("change", () => this.getChart().setView({ logy: this.logy.checked }));
    this.refresh();
  }

  // Offer the x modes the axes know now (a mode that went away falls back to global step).
  refresh() {
    const modes = this.axes.available();
    if (modes.join() === this.modes) return;
    this.modes = modes.join();
    const current = modes.includes(this.x.value) ? this.x.value : "step";
    replaceChildren(this.x, X_MODES.filter(([m]) => modes.includes(m)).map(([m, label]) => h("option", { value: m }, label)));
    this.x.value = current;
    if (this.getChart().view.x !== current) this.getChart().setView({ x: current });
  }

  // The view a new chart should start with (the eval chart after a metric change).
  view() {
    return { x: this.x.value || "step", smooth: Number(this.smooth.value), logy: this.logy.checked };
  }
}
