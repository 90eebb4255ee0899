from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Prefetch, Q, QuerySet

from runs.input_checks import choices_value, id_value, invalid, text_value
from runs.models import Queue, Run, RunState, StageRun
from runs.selectors.teams import team_ids_for

# The run list's query, one definition for the API (/api/runs/) and the runs page
# (/api/ui/runs/): the filters below and an ordering. Columns the filters compare with bound
# them: a longer value could only match after a silent cut.
NAME_MAX = Run._meta.get_field("name").max_length
TAG_MAX = Run._meta.get_field("tags").base_field.max_length
QUEUE_MAX = Queue._meta.get_field("name").max_length
RUN_ORDERINGS = ("-created_at", "created_at", "name", "-name", "state", "-state", "priority",
                 "-priority")  # fmt: skip
RUN_ORDERING_DEFAULT = "-created_at"


def run_ordering(raw: object) -> str:
    """An ordering query value, checked: empty or absent is the default."""
    if raw is None or raw == "":
        return RUN_ORDERING_DEFAULT
    if raw not in RUN_ORDERINGS:
        raise invalid("ordering", f"{str(raw)[:50]!r} is not one of {', '.join(RUN_ORDERINGS)}")
    return str(raw)


_RUN_FILTER_CHECKS = {
    "state": lambda v: choices_value(v, "state", RunState.values),
    "pipeline": lambda v: id_value(v, "pipeline"),
    "queue": lambda v: text_value(v, "queue", max_length=QUEUE_MAX),
    "tag": lambda v: text_value(v, "tag", max_length=TAG_MAX),
    "search": lambda v: text_value(v, "search", max_length=NAME_MAX),
    "ordering": run_ordering,
}


def run_filters(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Query values (strings, as from ``request.GET``; other keys are ignored) -> checked
    filters and the ordering. Absent or empty values are no filter and the default ordering; a
    bad value raises ``ValidationError`` naming every bad one (an ordering: the allowed ones)."""
    out: dict[str, Any] = {"ordering": RUN_ORDERING_DEFAULT}
    errors: dict[str, list[str]] = {}
    for key, check in _RUN_FILTER_CHECKS.items():
        value = (raw or {}).get(key)
        if value is None or value == "":
            continue
        try:
            out[key] = check(value)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    return out


def run_list(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[Run]:
    """The user's teams' runs with what a list row needs, in two queries, filtered and
    ordered (ties: newest id first) by ``filters``, query values as ``run_filters`` checks
    them (a bad one is a ValidationError)."""
    f = run_filters(filters)
    qs = (
        Run.objects.filter(team_id__in=team_ids_for(user))
        .select_related("pipeline", "queue", "team", "parent", "analysis")
        .prefetch_related(Prefetch("stage_runs", queryset=StageRun.objects.order_by("stage_index")))
    )
    if f.get("state"):
        qs = qs.filter(state__in=f["state"])
    if f.get("pipeline"):
        qs = qs.filter(pipeline_id=f["pipeline"])
    if f.get("queue"):
        qs = qs.filter(queue__name=f["queue"])
    if f.get("tag"):
        qs = qs.filter(tags__contains=[f["tag"]])
    if f.get("search"):
        s = f["search"]
        match = Q(name__icontains=s) | Q(pipeline__name__icontains=s)
        if len(s) <= TAG_MAX:  # the array is cast to varchar(50)[]: a longer one would be cut
            match |= Q(tags__contains=[s])
        qs = qs.filter(match)
    return qs.order_by(f["ordering"], "-pk")


def run_get(*, user, run_id: int) -> Run | None:
    return run_list(user=user).filter(pk=run_id).first()


ANALYSIS_SUMMARY_KEYS = ("acc", "bwt", "fwt", "avg_forgetting")


def run_analysis_summary(run: Run) -> dict | None:
    """The list columns of a run's stored analysis (``None`` before any eval point).
    ``run_list`` select_relates the analysis, so this costs no query per row."""
    result = getattr(getattr(run, "analysis", None), "result", None)
    if not result:
        return None
    metrics = result.get("metrics") or {}
    return {"metric": result.get("metric"), **{k: metrics.get(k) for k in ANALYSIS_SUMMARY_KEYS}}


def run_lineage(run: Run) -> list[tuple[int, int | None]]:
    """Where a run's history lives: ``(run id, last step taken from it)`` pairs, the run itself
    first (``None``: all its points), then each fork ancestor up to the step its descendant was
    forked at. A fork stores only the steps after its fork checkpoint, so the pairs cover
    disjoint step ranges and together give the run's curves from step 0."""
    out: list[tuple[int, int | None]] = [(run.pk, None)]
    upto: int | None = None
    seen = {run.pk}
    node = run
    while node.parent_id and node.fork_checkpoint_id and node.parent_id not in seen:
        step = node.fork_checkpoint.step
        upto = step if upto is None else min(upto, step)
        out.append((node.parent_id, upto))
        seen.add(node.parent_id)
        node = Run.objects.select_related("fork_checkpoint").get(pk=node.parent_id)
    return out


def run_choices(*, user, limit: int = 200) -> list[dict]:
    """The newest runs of the user's teams as a run picker lists them (the compare page)."""
    return [
        {"id": r.pk, "name": r.name, "state": r.state, "parent": r.parent_id,
         "pipeline": r.pipeline.name if r.pipeline else None}
        for r in run_list(user=user)[:limit]
    ]  # fmt: skip


WHATIF_STATES = (RunState.RUNNING, RunState.SUCCEEDED)


def whatif_runs(*, user, pipeline_id: int | None, limit: int = 100) -> list[dict]:
    """Runs whose training loss the what-if box can fit the law on: running or finished runs
    of the user's teams, this pipeline's runs first, newest first. Each row carries its
    model (the run's validated snapshot, every default filled in): the page offers only the
    runs whose model matches the plan being edited."""
    runs = run_list(user=user).filter(state__in=WHATIF_STATES)[:limit]
    rows = [{"id": r.pk, "name": r.name, "state": r.state, "pipeline": r.pipeline_id,
             "model": (r.plan or {}).get("model")} for r in runs]  # fmt: skip
    if pipeline_id is not None:
        rows.sort(key=lambda r: r["pipeline"] != pipeline_id)  # stable: keeps newest first
    return rows
