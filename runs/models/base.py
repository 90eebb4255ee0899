from django.conf import settings
from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class TeamNamedModel(TimeStampedModel):
    """What a team keeps under a name unique in the team (a dataset, a pipeline). A concrete
    model declares its ``team`` foreign key itself, with the related_name the team reaches it
    by (a related_name from here would be a template in the migrations)."""

    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        abstract = True
        ordering = ["team", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="%(class)s_unique_team_name"),
        ]

    def __str__(self) -> str:
        return self.name
