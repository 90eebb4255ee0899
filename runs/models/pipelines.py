from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT

from runs.models.base import TeamNamedModel


class Pipeline(TeamNamedModel):
    """An editable pipeline: one plan document, validated by ``trainers.plan`` and stored
    whole, exactly as the user gave it (fields left out keep the schema's defaults). Runs
    snapshot it when submitted. ``name`` mirrors ``plan["name"]`` (a constraint keeps them
    equal) so that it can be unique per team and searched."""

    team = models.ForeignKey("runs.Team", on_delete=models.CASCADE, related_name="pipelines")
    plan = models.JSONField(help_text="the trainers plan, as saved (see trainers/plan.py)")

    class Meta(TeamNamedModel.Meta):
        constraints = [
            *TeamNamedModel.Meta.constraints,
            models.CheckConstraint(
                condition=Q(plan__has_key="stages") & Q(name=KT("plan__name")),
                name="pipeline_name_is_plan_name",
            ),
        ]

    @property
    def stage_summaries(self) -> list[dict]:
        """Name and budget of each stage, read from the plan (for lists)."""
        out = []
        for st in self.plan.get("stages", []):
            unit = "tokens" if st.get("tokens") else "steps"
            out.append({"name": st.get("name", ""), "budget": st.get(unit), "unit": unit})
        return out
