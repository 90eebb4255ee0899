"""A run's family: its root ancestor and every descendant of that root, as the tree the
lineage page draws (runs, and between a run and the runs started from it the checkpoints
they start from).

A run descends from the run it was forked from and from the runs of the checkpoints it
merges (a stage's ``init_merge``, recorded as ``RunMergeParent`` rows). The tree hangs each
run under one parent: its fork parent, else its first merged checkpoint's run; every other
checkpoint it merges gets a ``merge`` node pointing at it, so each parent has an edge to it.

What the reader may see bounds the family: the walk up stops below the first ancestor of
another team (that one and its ancestors are not shown), the walk down does not enter
another team's run (nor anything started from it). Two queries per generation each way, a
few for the checkpoints and merges; at most ``MAX_FAMILY`` runs (``truncated`` says when
more exist)."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Q

from runs.models import Checkpoint, Run, RunMergeParent
from runs.selectors.teams import team_ids_for

MAX_FAMILY = 500
_FIELDS = ("pk", "name", "state", "tags", "parent_id", "fork_checkpoint_id", "created_at",
           "pipeline__name", "team_id")  # fmt: skip
_CKPT_FIELDS = ("pk", "run_id", "step", "stage_end", "stage_run__stage_index", "stage_run__name")
_EDGE_FIELDS = ("run_id", "checkpoint_id", "checkpoint__run_id", "checkpoint__run__name",
                "checkpoint__step", "weight")  # fmt: skip


def _edges(run_ids, allowed: set[int]):
    """Merge edges of these runs whose checkpoints the reader may see, in entry order."""
    return (
        RunMergeParent.objects.filter(
            run_id__in=run_ids, checkpoint__isnull=False, checkpoint__run__team_id__in=allowed
        )
        .order_by("run_id", "stage_index", "position")
        .values(*_EDGE_FIELDS)
    )


def _up(row: dict, allowed: set[int]) -> dict | None:
    """The visible run ``row`` hangs under: its fork parent, else its first merged
    checkpoint's run; None for a root."""
    ids = [] if row["parent_id"] is None else [row["parent_id"]]
    ids += [e["checkpoint__run_id"] for e in _edges([row["pk"]], allowed)]
    found = {
        r["pk"]: r for r in Run.objects.filter(pk__in=ids, team_id__in=allowed).values(*_FIELDS)
    }
    return next((found[pk] for pk in ids if pk in found), None)


def _ancestry(start: dict, allowed: set[int]) -> list[dict]:
    """``start`` and its ancestors up the chain of runs the reader may see, root first."""
    chain, seen = [start], {start["pk"]}
    while (up := _up(chain[-1], allowed)) is not None and up["pk"] not in seen:
        seen.add(up["pk"])
        chain.append(up)
    return chain[::-1]


def _descendants(root: dict, allowed: set[int]) -> tuple[list[dict], bool]:
    """The root and its visible descendants (forks and merges), generation by generation,
    oldest first in each; (rows, whether MAX_FAMILY cut the walk)."""
    rows, seen, frontier = [root], {root["pk"]}, [root["pk"]]
    while frontier:
        started = Q(parent_id__in=frontier) | Q(merge_parents__checkpoint__run_id__in=frontier)
        kids = Run.objects.filter(started, team_id__in=allowed).distinct()
        fresh = [r for r in kids.order_by("created_at", "pk").values(*_FIELDS)
                 if r["pk"] not in seen]  # fmt: skip
        if len(rows) + len(fresh) > MAX_FAMILY:
            rows += fresh[: MAX_FAMILY - len(rows)]
            return rows, True
        rows += fresh
        seen.update(r["pk"] for r in fresh)
        frontier = [r["pk"] for r in fresh]
    return rows, False


def _ckpt_node(c: dict, depth: int) -> dict:
    return {
        "kind": "checkpoint", "depth": depth, "id": c["pk"], "step": c["step"],
        "stage_end": c["stage_end"], "stage_index": c["stage_run__stage_index"],
        "stage_name": c["stage_run__name"],
    }  # fmt: skip


def _pick(c: dict) -> dict:
    """A checkpoint the merge action may pick."""
    return {"id": c["pk"], "step": c["step"], "stage_end": c["stage_end"],
            "stage_index": c["stage_run__stage_index"]}  # fmt: skip


class _Family:
    """The family's rows with their checkpoints and merge edges, drawn as a tree."""

    def __init__(self, rows: list[dict], allowed: set[int], run_id: int):
        self.rows, self.run_id = rows, run_id
        ids = [r["pk"] for r in rows]
        self.in_family = set(ids)
        self.edges: dict[int, list[dict]] = defaultdict(list)
        for e in _edges(ids, allowed):
            self.edges[e["run_id"]].append(e)
        shown = {r["fork_checkpoint_id"] for r in rows} | {
            e["checkpoint_id"] for es in self.edges.values() for e in es
        }
        qs = Checkpoint.objects.filter(Q(pk__in=shown) | Q(stage_end=True, run_id__in=ids))
        all_ckpts = list(qs.order_by("step", "pk").values(*_CKPT_FIELDS))
        self.ckpts = {c["pk"]: c for c in all_ckpts if c["pk"] in shown}
        self.picks: dict[int, list[dict]] = defaultdict(list)
        for c in all_ckpts:
            if c["run_id"] in self.in_family:
                self.picks[c["run_id"]].append(_pick(c))

    def _place(self, r: dict) -> tuple[int, int | None]:
        """(the run ``r`` hangs under, the checkpoint between them or None)."""
        if r["parent_id"] in self.in_family:
            ckpt = r["fork_checkpoint_id"]
            return r["parent_id"], ckpt if ckpt in self.ckpts else None
        for e in self.edges[r["pk"]]:
            if e["checkpoint__run_id"] in self.in_family:
                return e["checkpoint__run_id"], e["checkpoint_id"]
        return self.rows[0]["pk"], None  # not reached by the walk (cannot happen): the root

    def _run_node(self, r: dict, depth: int) -> dict:
        merge_of = [{"run": e["checkpoint__run_id"], "name": e["checkpoint__run__name"],
                     "step": e["checkpoint__step"], "checkpoint": e["checkpoint_id"],
                     "weight": e["weight"]} for e in self.edges[r["pk"]]]  # fmt: skip
        return {
            "kind": "run", "depth": depth, "id": r["pk"], "name": r["name"], "state": r["state"],
            "tags": r["tags"], "pipeline": r["pipeline__name"], "current": r["pk"] == self.run_id,
            "merge_of": merge_of, "checkpoints": self.picks[r["pk"]],
        }  # fmt: skip

    def _children(self) -> dict[int, dict[int | None, list[tuple[str, dict]]]]:
        """Under each run, by checkpoint (None: forks without one): the runs placed there
        and the merge edges drawn there to runs placed elsewhere."""
        under: dict[int, dict[int | None, list[tuple[str, dict]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for r in self.rows[1:]:
            placed = self._place(r)
            under[placed[0]][placed[1]].append(("run", r))
            for e in self.edges[r["pk"]]:
                at = (e["checkpoint__run_id"], e["checkpoint_id"])
                if at[0] in self.in_family and at != placed:
                    under[at[0]][at[1]].append(("merge", {**e, "name": r["name"], "pk": r["pk"]}))
        return under

    def tree(self) -> list[dict]:
        """The family in preorder, each node with its depth: a run, then per checkpoint (by
        step) the checkpoint and what starts from it, then forks without one."""
        under = self._children()
        out: list[dict] = []
        stack: list[tuple[str, dict, int]] = [("run", self.rows[0], 0)]
        while stack:  # iterative: a chain of a thousand forks is no recursion limit
            kind, item, depth = stack.pop()
            if kind == "checkpoint":
                out.append(_ckpt_node(item, depth))
            elif kind == "merge":
                out.append({"kind": "merge", "depth": depth, "id": item["pk"],
                            "name": item["name"], "weight": item["weight"]})  # fmt: skip
            else:
                out.append(self._run_node(item, depth))
                stack += reversed(self._later(under[item["pk"]], depth))
        return out

    def _later(self, by_ckpt: dict, depth: int) -> list[tuple[str, dict, int]]:
        later: list[tuple[str, dict, int]] = []
        for cid in sorted(
            (c for c in by_ckpt if c is not None), key=lambda c: self.ckpts[c]["step"]
        ):
            later.append(("checkpoint", self.ckpts[cid], depth + 1))
            later += [(kind, x, depth + 2) for kind, x in by_ckpt[cid]]
        later += [(kind, x, depth + 1) for kind, x in by_ckpt.get(None, [])]
        return later


def run_family(*, user, run_id: int) -> dict | None:
    """The family of run ``run_id`` as its reader may see it, or None when they may not see
    the run: ``root`` (its furthest visible ancestor's id), ``runs`` (every run's id, in tree
    order), ``nodes`` (the tree in preorder: runs with the runs' checkpoints they merge and
    the stage-end checkpoints one may merge, checkpoints, and ``merge`` nodes: an edge from a
    checkpoint to a run drawn under another parent) and ``truncated``."""
    allowed = set(team_ids_for(user))
    start = Run.objects.filter(pk=run_id, team_id__in=allowed).values(*_FIELDS).first()
    if start is None:
        return None
    chain = _ancestry(start, allowed)
    root = chain[0]
    rows, truncated = _descendants(root, allowed)
    if run_id not in {r["pk"] for r in rows}:  # cut by MAX_FAMILY: the asked run's chain
        rows = chain
    nodes = _Family(rows, allowed, run_id).tree()
    runs = [n["id"] for n in nodes if n["kind"] == "run"]
    return {"root": root["pk"], "run": run_id, "runs": runs, "nodes": nodes,
            "truncated": truncated}  # fmt: skip
