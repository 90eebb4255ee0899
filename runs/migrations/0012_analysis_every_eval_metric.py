"""A run's stored analysis now holds every eval set in loss and accuracy (one ContinualState
per metric, on the stage rows' bounds), so that the run page reads it instead of the points.
Analyses stored before (one metric, the plan's eval sets) are rebuilt from the eval points of
the run's line, as a run's first eval batch builds one."""

from django.db import migrations


def _line(Run, run) -> list[tuple[int, int | None]]:
    """``runs.selectors.runs.run_lineage`` on the historical models."""
    pairs, upto, node = [(run.pk, None)], None, run
    while node.parent_id and node.fork_checkpoint_id and len(pairs) <= 1000:
        step = node.fork_checkpoint.step
        upto = step if upto is None else min(upto, step)
        pairs.append((node.parent_id, upto))
        node = Run.objects.select_related("fork_checkpoint").get(pk=node.parent_id)
    return pairs


def rebuild(apps, schema_editor):
    from runs.selectors.analysis import line_eval_points, stage_bounds, state_from_points
    from runs.services.analysis import analysis_fields

    Run = apps.get_model("runs", "Run")
    StageRun = apps.get_model("runs", "StageRun")
    RunAnalysis = apps.get_model("runs", "RunAnalysis")
    for row in RunAnalysis.objects.select_related("run__fork_checkpoint").iterator():
        if isinstance(row.state, dict) and "eval" in row.state:
            continue
        run = row.run
        stages = list(StageRun.objects.filter(run_id=run.pk).order_by("stage_index"))
        bounds = stage_bounds(run.plan, stages)
        if not bounds:
            continue
        points, inherited = line_eval_points(_line(Run, run))
        state = state_from_points(bounds, points)
        fields = analysis_fields(run.plan, state, inherited)
        RunAnalysis.objects.filter(pk=row.pk).update(**fields)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0011_run_notes"),
    ]

    operations = [
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
