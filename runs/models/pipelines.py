from django.conf import settings
from django.db import models
from django.db.models import F, Q

from runs.models.base import TimeStampedModel


class Pipeline(TimeStampedModel):
    """A versionless, editable pipeline. Runs snapshot it into a plan when submitted."""

    team = models.ForeignKey("runs.Team", on_delete=models.CASCADE, related_name="pipelines")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    model_spec = models.JSONField(default=dict, help_text="trainers model spec (arch, size/path)")
    eval_sets = models.JSONField(default=list, help_text="named eval sets the stages refer to")
    seed = models.BigIntegerField(default=0)
    extra = models.JSONField(
        default=dict, blank=True, help_text="other trainers plan fields (log_interval, ...)"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["team", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="pipeline_unique_team_name"),
            models.CheckConstraint(condition=Q(seed__gte=0), name="pipeline_seed_gte_0"),
        ]

    def __str__(self) -> str:
        return self.name


class Objective(models.TextChoices):
    CAUSAL_LM = "causal_lm", "Causal LM"
    SFT = "sft", "SFT (prompt-masked)"
    CLASSIFICATION = "classification", "Classification"


class BudgetUnit(models.TextChoices):
    STEPS = "steps", "Steps"
    TOKENS = "tokens", "Tokens"


class StageDefinition(models.Model):
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="stages")
    order = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    objective = models.CharField(max_length=20, choices=Objective.choices)
    data_sources = models.JSONField(
        default=list, help_text='[{"source": "builtin:prose", "weight": 1.0}, ...]'
    )
    replay_sources = models.JSONField(default=list, blank=True)
    replay_ratio = models.FloatField(default=0.0)
    budget_unit = models.CharField(max_length=10, choices=BudgetUnit.choices, default="steps")
    budget = models.BigIntegerField()
    batch_size = models.PositiveIntegerField(default=16)
    seq_len = models.PositiveIntegerField(default=64)
    optimizer = models.JSONField(default=dict, blank=True)
    lr_schedule = models.JSONField(default=dict, help_text='{"type": "wsd", ...parameters}')
    warmup_steps = models.PositiveIntegerField(default=0)
    eval_sets = models.JSONField(default=list, blank=True)
    eval_interval = models.PositiveIntegerField(default=50)
    checkpoint_interval = models.PositiveIntegerField(default=100)
    task = models.CharField(max_length=100, blank=True, help_text="this stage's own eval set")
    init_from = models.CharField(
        max_length=500, blank=True, help_text="checkpoint dir to start from"
    )
    extra = models.JSONField(default=dict, blank=True, help_text="other trainers stage fields")

    class Meta:
        ordering = ["pipeline", "order"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "order"], name="stage_unique_order"),
            models.UniqueConstraint(fields=["pipeline", "name"], name="stage_unique_name"),
            models.CheckConstraint(
                condition=Q(objective__in=Objective.values), name="stage_objective_valid"
            ),
            models.CheckConstraint(
                condition=Q(replay_ratio__gte=0) & Q(replay_ratio__lte=1),
                name="stage_replay_ratio_0_1",
            ),
            models.CheckConstraint(condition=Q(budget__gt=0), name="stage_budget_gt_0"),
            models.CheckConstraint(condition=Q(batch_size__gt=0), name="stage_batch_size_gt_0"),
            models.CheckConstraint(condition=Q(seq_len__gt=0), name="stage_seq_len_gt_0"),
            models.CheckConstraint(
                condition=Q(eval_interval__gt=0), name="stage_eval_interval_gt_0"
            ),
            models.CheckConstraint(
                condition=Q(checkpoint_interval__gt=0), name="stage_checkpoint_interval_gt_0"
            ),
            models.CheckConstraint(
                condition=Q(warmup_steps__lte=F("budget")) | ~Q(budget_unit="steps"),
                name="stage_warmup_within_budget",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name}/{self.order}:{self.name}"
