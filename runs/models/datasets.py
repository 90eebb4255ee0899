from django.conf import settings
from django.db import models
from django.db.models import Q

from runs.models.base import TeamNamedModel


class DatasetFormat(models.TextChoices):
    TEXT = "text", "Plain text"
    JSONL = "jsonl", "JSON lines"
    PARQUET = "parquet", "Parquet"


class Dataset(TeamNamedModel):
    """Uploaded data of a team, one DatasetVersion per distinct content."""

    team = models.ForeignKey("runs.Team", on_delete=models.CASCADE, related_name="datasets")


class DatasetVersion(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    format = models.CharField(max_length=10, choices=DatasetFormat.choices)
    size_bytes = models.BigIntegerField()
    content_hash = models.CharField(max_length=64, help_text="sha256 of the stored bytes")
    storage_path = models.CharField(max_length=500)
    records = models.BigIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "version"], name="datasetversion_unique_version"
            ),
            models.UniqueConstraint(
                fields=["dataset", "content_hash"], name="datasetversion_unique_content"
            ),
            models.CheckConstraint(
                condition=Q(version__gte=1), name="datasetversion_version_gte_1"
            ),
            models.CheckConstraint(
                condition=Q(size_bytes__gte=0), name="datasetversion_size_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(content_hash__regex=r"^[0-9a-f]{64}$"),
                name="datasetversion_hash_sha256",
            ),
            models.CheckConstraint(
                condition=Q(format__in=DatasetFormat.values), name="datasetversion_format_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.version}"
