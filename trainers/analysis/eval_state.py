"""Incremental analysis of every eval series of a run: one ``ContinualState`` per metric.

A run reports eval series under keys ``eval/<set>/<metric>``. ``EvalState`` keeps, for each
analysed metric (``HIGHER_IS_BETTER``), one ``ContinualState`` whose columns are the eval sets
in the order their first point arrived, and each set's value at step 0 (the untrained model:
FWT's baseline). Everything a report needs — a matrix, stability gaps, min-ACC for any
ordering of the sets — is read from it with ``snapshot(metric, names)``; the cost of an update
or a snapshot is O(stages x eval sets), whatever the number of points received.

The last stage is open-ended: a point after the last boundary counts in it. A run's stored
points never lie after its last stage's end, but that end may move as the run goes (a
free-form run's open last stage ends at its last point): moving it costs nothing
(``extended``), and appending stages costs nothing while no point lies after the new
boundaries.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._util import check_boundaries
from .incremental import ContinualState

# the analysed metrics (eval key suffixes) and their direction
HIGHER_IS_BETTER = {"loss": False, "acc": True}
_VERSION = 1
_OPEN_END = 2**62  # the ContinualStates' last boundary: after any step


def _inner(boundaries: list[int]) -> list[int]:
    return [*boundaries[:-1], _OPEN_END]


def eval_key(key: str) -> tuple[str, str] | None:
    """``eval/<set>/<metric>`` of an analysed metric -> (set, metric); anything else None."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "eval" and parts[2] in HIGHER_IS_BETTER:
        return parts[1], parts[2]
    return None


class EvalState:
    """The analysed eval series of a run on fixed stage ``boundaries``."""

    def __init__(self, boundaries) -> None:
        self.boundaries = check_boundaries(boundaries)
        if self.boundaries[-1] >= _OPEN_END:
            raise ValueError(f"boundaries must be < {_OPEN_END}")
        self.states: dict[str, ContinualState] = {}
        self.sets: dict[str, list[str]] = {}  # metric -> eval set name of each column
        self.baseline: dict[str, dict[str, float]] = {}  # metric -> set -> value at step 0

    def _column(self, metric: str, name: str) -> int:
        if metric not in self.states:
            hib = HIGHER_IS_BETTER[metric]
            self.states[metric] = ContinualState(0, _inner(self.boundaries), higher_is_better=hib)
            self.sets[metric], self.baseline[metric] = [], {}
        sets = self.sets[metric]
        if name not in sets:
            sets.append(name)
            self.states[metric].add_eval_set()
        return sets.index(name)

    def update(self, series: Mapping[str, tuple]) -> bool:
        """Fold key -> (steps, values), each sorted by step, into the state (keys other than
        analysed eval keys are left out). Returns whether any key was analysed."""
        touched = False
        for key, (steps, values) in series.items():
            parsed = eval_key(key)
            if parsed is None:
                continue
            name, metric = parsed
            j = self._column(metric, name)
            self.states[metric].update(j, steps, values)
            if len(steps) and steps[0] == 0:
                self.baseline[metric][name] = float(values[0])
            touched = True
        return touched

    def names(self, metric: str) -> list[str]:
        """The eval sets with points in ``metric``, sorted by name."""
        state = self.states.get(metric)
        if state is None:
            return []
        return sorted(n for j, n in enumerate(self.sets[metric]) if state.has_points(j))

    def has_points(self) -> bool:
        return any(self.names(m) for m in self.states)

    def snapshot(self, metric: str, names: list[str], steps: bool = False) -> dict:
        """``ContinualState.snapshot`` of ``metric`` with eval set k = ``names[k]`` (a set
        without points reads as empty)."""
        state = self.states.get(metric)
        if state is None:
            hib = HIGHER_IS_BETTER[metric]
            state = ContinualState(0, _inner(self.boundaries), higher_is_better=hib)
        sets = self.sets.get(metric, [])
        return state.snapshot([sets.index(n) if n in sets else None for n in names], steps)

    def extended(self, boundaries) -> EvalState | None:
        """This state on ``boundaries`` = the current ones with the last one moved and/or
        later stages appended, or ``None`` when that cannot be exact: other boundaries
        changed, or a point lies after a new boundary other than the last (see
        ``ContinualState.extended``)."""
        out = EvalState(boundaries)
        for metric, state in self.states.items():
            ext = state.extended(_inner(out.boundaries))
            if ext is None:
                return None
            out.states[metric] = ext
        out.sets = {m: list(s) for m, s in self.sets.items()}
        out.baseline = {m: dict(b) for m, b in self.baseline.items()}
        return out

    def to_dict(self) -> dict:
        return {
            "version": _VERSION,
            "boundaries": list(self.boundaries),
            "metrics": {
                m: {"sets": self.sets[m], "baseline": self.baseline[m], "state": s.to_dict()}
                for m, s in self.states.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> EvalState:
        if d.get("version") != _VERSION:
            raise ValueError(f"unsupported EvalState version {d.get('version')!r}")
        out = cls(d["boundaries"])
        inner = _inner(out.boundaries)
        for metric, m in d["metrics"].items():
            state = ContinualState.from_dict(m["state"])
            bad = state.num_eval_sets != len(m["sets"]) or state.boundaries != inner
            if metric not in HIGHER_IS_BETTER or bad:
                raise ValueError(f"bad EvalState entry for {metric!r}")
            out.states[metric] = state
            out.sets[metric] = list(m["sets"])
            out.baseline[metric] = {k: float(v) for k, v in m["baseline"].items()}
        return out
