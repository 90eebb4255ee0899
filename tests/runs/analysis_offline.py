"""The analysis the server must show, computed offline from a CLI metrics.jsonl."""

from trainers import analysis


def offline_analysis(rows: list[dict], plan: dict) -> dict:
    from runs.services.analysis import analysis_layout

    metric, names, bounds = analysis_layout(plan)
    series = [
        [[r["step"], r["value"]] for r in rows if r["key"] == f"eval/{n}/{metric}"] for n in names
    ]
    higher = metric == "acc"
    R = analysis.matrix_from_series(series, bounds)
    base = [next((v for s, v in ser if s == 0), None) for ser in series]
    T = len(bounds)
    out = {
        "matrix": R,
        "stability_gaps": analysis.stability_gaps(series, bounds, higher_is_better=higher),
        "metrics": analysis.matrix_metrics([r[:T] for r in R], base),
    }
    if higher:
        out["min_acc_per_task"] = analysis.min_acc_per_task(series, bounds)
        out["avg_min_acc"] = analysis.avg_min_acc(series, bounds)
        out["wc_acc"] = analysis.wc_acc(series, bounds)
    else:
        out["loss_forgetting"] = analysis.loss_forgetting(R)
    return out
