"""Pure-numpy analysis of continual-learning runs (no Django, no torch).

Every function returns plain Python floats / ints / lists / dicts (JSON-serialisable); an
undefined value is ``None``, never NaN. A metric that needs a missing (``None`` / NaN) input
entry is ``None``.

* ``matrix_metrics``, ``loss_forgetting`` — accuracy / loss matrices (``matrices.py``)
* ``matrix_from_series``, ``min_acc_per_task``, ``avg_min_acc``, ``wc_acc`` — continual
  evaluation series (``continual.py``)
* ``stability_gaps`` — drop and recovery after stage boundaries (``gaps.py``)
* ``lr_areas``, ``fit_lr_law``, ``lr_law_predict`` — LR-annealing loss law (``lr_law.py``)
* ``ContinualState`` — incremental version of the series metrics (``incremental.py``)
"""

from .continual import avg_min_acc, matrix_from_series, min_acc_per_task, wc_acc
from .gaps import stability_gaps
from .incremental import ContinualState
from .lr_law import fit_lr_law, lr_areas, lr_law_predict
from .matrices import loss_forgetting, matrix_metrics

__all__ = [
    "ContinualState",
    "avg_min_acc",
    "fit_lr_law",
    "loss_forgetting",
    "lr_areas",
    "lr_law_predict",
    "matrix_from_series",
    "matrix_metrics",
    "min_acc_per_task",
    "stability_gaps",
    "wc_acc",
]
