"""The analysis the server must show, computed offline from a CLI metrics.jsonl."""

from trainers import analysis


def offline_analysis(rows: list[dict], plan: dict) -> dict:
    from runs.selectors.analysis import analysis_layout

    metric, names, bounds = analysis_layout(plan)
    series = [
        [[r["step"], r["value"]] for r in rows if r["key"] == f"eval/{n}/{metric}"] for n in names
    ]
    higher = metric == "acc"
    R = analysis.matrix_from_series(series, bounds)
    base = [next((v for s, v in ser if s == 0), None) for ser in series]
    T = len(bounds)
    sign = 1.0 if higher else -1.0  # loss: accuracy's reading on -L (see oriented_metrics)
    flipped = [[None if x is None else sign * x for x in r[:T]] for r in R]
    b = [None if x is None else sign * x for x in base]
    metrics = analysis.matrix_metrics(flipped, b if None not in b else None)
    metrics["acc"] = None if metrics["acc"] is None else sign * metrics["acc"]
    out = {
        "matrix": R,
        "stability_gaps": analysis.stability_gaps(series, bounds, higher_is_better=higher),
        "metrics": metrics,
    }
    if higher:
        out["min_acc_per_task"] = analysis.min_acc_per_task(series, bounds)
        out["avg_min_acc"] = analysis.avg_min_acc(series, bounds)
        out["wc_acc"] = analysis.wc_acc(series, bounds)
    else:
        out["loss_forgetting"] = analysis.loss_forgetting(R)
    return out
