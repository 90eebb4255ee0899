"""What a team may read on the server besides builtin sources, and what its runs read.

A ``DataRoot`` is a folder an admin granted to one team: its plans may name files and model
directories under it (runs/services/data_access.py). A ``RunDatasetVersion`` records a
registered dataset version a run trains or evaluates on (lineage; set at submit)."""

import os

from django.core.exceptions import ValidationError
from django.db import models

from runs.models.base import TimeStampedModel


class DataRoot(TimeStampedModel):
    team = models.ForeignKey("runs.Team", on_delete=models.CASCADE, related_name="data_roots")
    path = models.CharField(
        max_length=1000,
        help_text="absolute folder on the servers and workers; the team's plans may read "
        "files and model directories under it (symlinks and .. are resolved first)",
    )
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["team", "path"]
        constraints = [
            models.UniqueConstraint(fields=["team", "path"], name="dataroot_unique_team_path"),
        ]

    def clean(self) -> None:
        if not os.path.isabs(self.path or ""):
            raise ValidationError({"path": "give an absolute path (it starts with /)"})
        if "\x00" in self.path:
            raise ValidationError({"path": "must not contain NUL characters"})
        self.path = os.path.normpath(self.path)

    def __str__(self) -> str:
        return f"{self.path} ({self.team})"


class RunDatasetVersion(models.Model):
    """One registered dataset version a run's plan names (``dataset:<name>@<version>``)."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="dataset_uses")
    # RESTRICT: a version a run trained on is kept while the run is (deleting the team, which
    # deletes both, still works).
    dataset_version = models.ForeignKey(
        "runs.DatasetVersion", on_delete=models.RESTRICT, related_name="run_uses"
    )
    reference = models.CharField(
        max_length=200, help_text="as pinned in the run's plan: dataset:<name>@<version>"
    )

    class Meta:
        ordering = ["run", "reference"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "dataset_version"], name="rundatasetversion_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} reads {self.reference}"
