"""Merge lineage: the checkpoints a run's stage starts from the weighted average of (a
stage's ``init_merge`` naming checkpoints of the team's runs; set at submit)."""

from django.db import models
from django.db.models import Q


class RunMergeParent(models.Model):
    """One checkpoint of a merge: entry ``position`` of stage ``stage_index``'s init_merge."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="merge_parents")
    # SET_NULL: deleting the parent run (or pruning the checkpoint) keeps the row and its
    # reference; the lineage then has no checkpoint to draw the edge from.
    checkpoint = models.ForeignKey(
        "runs.Checkpoint",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="merged_into",
    )
    stage_index = models.PositiveSmallIntegerField()
    position = models.PositiveSmallIntegerField(help_text="J in stages.N.init_merge.J")
    weight = models.FloatField(help_text="as written in the plan (merges normalise the weights)")
    reference = models.CharField(max_length=100, help_text="run:<run_id>@<step>")

    class Meta:
        ordering = ["run", "stage_index", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "stage_index", "position"], name="runmergeparent_unique_entry"
            ),
            models.CheckConstraint(condition=Q(weight__gt=0), name="runmergeparent_weight_gt_0"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} stage {self.stage_index} merges {self.reference}"
