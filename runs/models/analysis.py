from django.db import models


class RunAnalysis(models.Model):
    """Continual-learning analysis of a run, updated incrementally as eval points arrive.

    ``state`` is ``{"eval": trainers.analysis.EvalState, "inherited_points": n}``: one
    ContinualState per analysed eval metric over every eval set of the run's line, fork
    ancestry folded in, on the stage bounds of its StageRun rows (O(stages × eval sets)
    numbers, never the points themselves; ``runs.selectors.analysis`` reads both reports from
    it). ``result`` is the continual-learning report in the API's shape, for the plan's
    ``metric`` and ``eval_sets`` (task j = stage j) on ``boundaries``.
    """

    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="analysis")
    metric = models.CharField(max_length=10, help_text="acc (higher is better) or loss")
    eval_sets = models.JSONField(help_text="eval set names in analysis order (task j = stage j)")
    boundaries = models.JSONField(help_text="last global step of every stage")
    state = models.JSONField()
    baseline = models.JSONField(default=dict, help_text="eval index -> value at step 0")
    result = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "run analyses"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(metric__in=["acc", "loss"]), name="analysis_metric_valid"
            )
        ]

    def __str__(self) -> str:
        return f"analysis of run {self.run_id}"
