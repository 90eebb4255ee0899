"""Pipelines keep their plan as one document. Existing pipelines get the plan their rows
translated to (the same translation runs used to snapshot, so what they trained stays what
they show); the stage rows and the per-field columns are then dropped."""

from django.db import migrations, models
from django.db.models import Q
from django.db.models.fields.json import KT

_STAGE_COLUMNS = {"name", "objective", "data", "replay", "steps", "tokens", "batch_size",
                  "seq_len", "optimizer", "schedule", "eval_sets", "eval_interval",
                  "checkpoint_interval", "task"}  # fmt: skip


def _stage_plan(stage) -> dict:
    spec = {
        "name": stage.name,
        "objective": stage.objective,
        "data": stage.data_sources,
        "batch_size": stage.batch_size,
        "seq_len": stage.seq_len,
        "optimizer": stage.optimizer or {},
        "schedule": {**(stage.lr_schedule or {}), "warmup_steps": stage.warmup_steps},
        "eval_sets": stage.eval_sets,
        "eval_interval": stage.eval_interval,
        "checkpoint_interval": stage.checkpoint_interval,
        stage.budget_unit: stage.budget,
    }
    if stage.replay_sources:
        share = stage.replay_ratio / len(stage.replay_sources)
        spec["replay"] = [{"source": s, "ratio": share} for s in stage.replay_sources]
    if stage.task:
        spec["task"] = stage.task
    return {**spec, **(stage.extra or {})}


def forwards(apps, schema_editor):
    Pipeline = apps.get_model("runs", "Pipeline")
    for p in Pipeline.objects.all():
        p.plan = {
            **(p.extra or {}),
            "name": p.name,
            "seed": p.seed,
            "model": p.model_spec,
            "eval_sets": p.eval_sets,
            "stages": [_stage_plan(s) for s in p.stages.order_by("order")],
        }
        p.save(update_fields=["plan"])


class Migration(migrations.Migration):
    dependencies = [("runs", "0006_run_last_report_at")]

    operations = [
        migrations.AddField(
            model_name="pipeline",
            name="plan",
            field=models.JSONField(
                default=dict, help_text="the trainers plan, as saved (see trainers/plan.py)"
            ),
            preserve_default=False,
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="pipeline", name="pipeline_seed_gte_0"),
        migrations.RemoveField(model_name="pipeline", name="model_spec"),
        migrations.RemoveField(model_name="pipeline", name="eval_sets"),
        migrations.RemoveField(model_name="pipeline", name="seed"),
        migrations.RemoveField(model_name="pipeline", name="extra"),
        migrations.DeleteModel(name="StageDefinition"),
        migrations.AddConstraint(
            model_name="pipeline",
            constraint=models.CheckConstraint(
                condition=Q(plan__has_key="stages") & Q(name=KT("plan__name")),
                name="pipeline_name_is_plan_name",
            ),
        ),
    ]
