// The run page's metric pickers, filled from the keys the run has (never a fixed list: an LM
// run offers no accuracy): the eval chart's metric (the last part of `eval/<set>/<metric>`)
// and the "more metrics" chart's key (anything not drawn elsewhere: `train/grad_norm`,
// `train/tokens`, a client's own keys). onChange("eval" | "other") when a picker's value
// changes, by the user or because its choices did.
import { h, replaceChildren } from "./dom.js";

const EVAL_ORDER = ["loss", "ppl", "acc"];
const LABELS = { loss: "loss", ppl: "perplexity", acc: "accuracy" };

export class MetricChoices {
  constructor(evalSel, otherSel) {
    this.eval = evalSel;
    this.other = otherSel;
    this.seen = new Set();
    this.onChange = () => {};
    evalSel.addEventListener("change", () => this.onChange("eval"));
    otherSel.addEventListener("change", () => this.onChange("other"));
  }

  isEval(key) {
    const p = key.split("/");
    return p[0] === "eval" && p.length === 3;
  }

  isOther(key) { return key !== "train/loss" && key !== "lr" && !this.isEval(key); }

  known(key) { return this.seen.has(key); }

  update(keys) {
    keys.forEach((k) => this.seen.add(k));
    const all = [...this.seen];
    const found = new Set(all.filter((k) => this.isEval(k)).map((k) => k.split("/")[2]));
    const evalMetrics = [...EVAL_ORDER.filter((m) => found.has(m)), ...[...found].filter((m) => !EVAL_ORDER.includes(m)).sort()];
    this._fill(this.eval, evalMetrics, (m) => LABELS[m] || m, "eval");
    this._fill(this.other, all.filter((k) => this.isOther(k)).sort(), (k) => k, "other");
  }

  _fill(sel, values, label, which) {
    const sig = values.join("\n");
    if (sel.dataset.sig === sig) return;
    sel.dataset.sig = sig;
    const prev = sel.value;
    replaceChildren(sel, values.map((v) => h("option", { value: v }, label(v))));
    sel.value = values.includes(prev) ? prev : (values[0] ?? "");
    if (sel.value !== prev) this.onChange(which);
  }
}
