"""A run's family: its root ancestor and every descendant of that root, as the tree the
lineage page draws (runs, and between a run and its forks the checkpoints they start from).

What the reader may see bounds the family: the walk up stops below the first ancestor of
another team (that one and its ancestors are not shown), the walk down does not enter
another team's fork (nor anything forked from it). One query per generation each way, one
for the fork checkpoints; at most ``MAX_FAMILY`` runs (``truncated`` says when more exist)."""

from __future__ import annotations

from collections import defaultdict

from runs.models import Checkpoint, Run
from runs.selectors.teams import team_ids_for

MAX_FAMILY = 500
_FIELDS = ("pk", "name", "state", "tags", "parent_id", "fork_checkpoint_id", "created_at",
           "pipeline__name", "team_id")  # fmt: skip


def _ancestry(start: dict, allowed: set[int]) -> list[dict]:
    """``start`` and its ancestors up the chain of runs the reader may see, root first."""
    chain, seen = [start], {start["pk"]}
    while chain[-1]["parent_id"] is not None and chain[-1]["parent_id"] not in seen:
        parent = Run.objects.filter(pk=chain[-1]["parent_id"], team_id__in=allowed)
        row = parent.values(*_FIELDS).first()
        if row is None:
            break
        seen.add(row["pk"])
        chain.append(row)
    return chain[::-1]


def _descendants(root: dict, allowed: set[int]) -> tuple[list[dict], bool]:
    """The root and its visible descendants, generation by generation, oldest first in
    each; (rows, whether MAX_FAMILY cut the walk)."""
    rows, seen, frontier = [root], {root["pk"]}, [root["pk"]]
    while frontier:
        kids = Run.objects.filter(parent_id__in=frontier, team_id__in=allowed)
        fresh = [r for r in kids.order_by("created_at", "pk").values(*_FIELDS)
                 if r["pk"] not in seen]  # fmt: skip
        if len(rows) + len(fresh) > MAX_FAMILY:
            rows += fresh[: MAX_FAMILY - len(rows)]
            return rows, True
        rows += fresh
        seen.update(r["pk"] for r in fresh)
        frontier = [r["pk"] for r in fresh]
    return rows, False


def _checkpoints(rows: list[dict]) -> dict[int, dict]:
    ids = [r["fork_checkpoint_id"] for r in rows if r["fork_checkpoint_id"] is not None]
    qs = Checkpoint.objects.filter(pk__in=ids).values(
        "pk", "step", "stage_end", "stage_run__stage_index", "stage_run__name"
    )
    return {c["pk"]: c for c in qs}


def _run_node(r: dict, depth: int, run_id: int) -> dict:
    return {
        "kind": "run", "depth": depth, "id": r["pk"], "name": r["name"], "state": r["state"],
        "tags": r["tags"], "pipeline": r["pipeline__name"], "current": r["pk"] == run_id,
    }  # fmt: skip


def _ckpt_node(c: dict, depth: int) -> dict:
    return {
        "kind": "checkpoint", "depth": depth, "id": c["pk"], "step": c["step"],
        "stage_end": c["stage_end"], "stage_index": c["stage_run__stage_index"],
        "stage_name": c["stage_run__name"],
    }  # fmt: skip


def _tree(rows: list[dict], ckpts: dict[int, dict], run_id: int) -> list[dict]:
    """The family in preorder, each node with its depth: a run, then per fork checkpoint
    (by step) the checkpoint and the runs forked from it, then forks without one."""
    children: dict[int, list[dict]] = defaultdict(list)
    for r in rows[1:]:
        children[r["parent_id"]].append(r)
    out: list[dict] = []
    stack: list[tuple[str, dict, int]] = [("run", rows[0], 0)]
    while stack:  # iterative: a chain of a thousand forks is no recursion limit
        kind, item, depth = stack.pop()
        if kind == "checkpoint":
            out.append(_ckpt_node(item, depth))
            continue
        out.append(_run_node(item, depth, run_id))
        by_ckpt: dict[int | None, list[dict]] = defaultdict(list)
        for kid in children.get(item["pk"], []):
            by_ckpt[
                kid["fork_checkpoint_id"] if kid["fork_checkpoint_id"] in ckpts else None
            ].append(kid)
        later: list[tuple[str, dict, int]] = []
        for cid in sorted((c for c in by_ckpt if c is not None), key=lambda c: ckpts[c]["step"]):
            later.append(("checkpoint", ckpts[cid], depth + 1))
            later += [("run", kid, depth + 2) for kid in by_ckpt[cid]]
        later += [("run", kid, depth + 1) for kid in by_ckpt.get(None, [])]
        stack += reversed(later)
    return out


def run_family(*, user, run_id: int) -> dict | None:
    """The family of run ``run_id`` as its reader may see it, or None when they may not see
    the run: ``root`` (its furthest visible ancestor's id), ``runs`` (every run's id, in tree
    order), ``nodes`` (the tree in preorder: runs and checkpoints with their depth) and
    ``truncated``."""
    allowed = set(team_ids_for(user))
    start = Run.objects.filter(pk=run_id, team_id__in=allowed).values(*_FIELDS).first()
    if start is None:
        return None
    chain = _ancestry(start, allowed)
    root = chain[0]
    rows, truncated = _descendants(root, allowed)
    if run_id not in {r["pk"] for r in rows}:  # cut by MAX_FAMILY: the asked run's chain
        rows = chain
    nodes = _tree(rows, _checkpoints(rows), run_id)
    runs = [n["id"] for n in nodes if n["kind"] == "run"]
    return {"root": root["pk"], "run": run_id, "runs": runs, "nodes": nodes,
            "truncated": truncated}  # fmt: skip
