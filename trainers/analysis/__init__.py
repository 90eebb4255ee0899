"""Pure-numpy analysis of continual-learning runs (no Django, no torch).

Every function returns plain Python floats / ints / lists / dicts (JSON-serialisable); an
undefined value is ``None``, never NaN. A metric that needs a missing (``None`` / NaN) input
entry is ``None``.

* ``matrix_metrics``, ``oriented_metrics``, ``loss_forgetting`` — accuracy / loss matrices
  (``matrices.py``)
* ``matrix_from_series``, ``min_acc_per_task``, ``avg_min_acc``, ``wc_acc`` — continual
  evaluation series (``continual.py``)
* ``stability_gaps`` — drop and recovery after stage boundaries; ``old_tasks`` and
  ``old_task_gap_table`` — the table of drops of tasks learned before each boundary (``gaps.py``)
* ``lr_areas``, ``fit_lr_law``, ``lr_law_predict``, ``schedule_nodes`` — LR-annealing loss law,
  on per-step LR or a bounded grid (``lr_law.py``)
* ``ContinualState`` — incremental version of the series metrics (``incremental.py``);
  ``EvalState`` — one per analysed metric over all of a run's eval series (``eval_state.py``)
* ``continual_report``, ``boundary_report`` — what the API answers and the run page draws,
  read from an ``EvalState`` (``reports.py``)
"""

from .continual import avg_min_acc, matrix_from_series, min_acc_per_task, wc_acc
from .eval_state import HIGHER_IS_BETTER, EvalState, eval_key
from .gaps import old_task_gap_table, old_tasks, stability_gaps
from .incremental import ContinualState
from .lr_law import fit_lr_law, lr_areas, lr_law_predict, schedule_nodes
from .matrices import loss_forgetting, matrix_metrics, oriented_metrics
from .reports import boundary_report, continual_report

__all__ = [
    "HIGHER_IS_BETTER",
    "ContinualState",
    "EvalState",
    "avg_min_acc",
    "boundary_report",
    "continual_report",
    "eval_key",
    "fit_lr_law",
    "loss_forgetting",
    "lr_areas",
    "lr_law_predict",
    "matrix_from_series",
    "matrix_metrics",
    "min_acc_per_task",
    "old_task_gap_table",
    "old_tasks",
    "oriented_metrics",
    "schedule_nodes",
    "stability_gaps",
    "wc_acc",
]
