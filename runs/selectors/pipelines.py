from django.db.models import QuerySet

from runs.models import Pipeline
from runs.selectors.teams import team_ids_for


def pipeline_list(*, user) -> QuerySet[Pipeline]:
    """The user's teams' pipelines, by name."""
    return (
        Pipeline.objects.filter(team_id__in=team_ids_for(user))
        .select_related("team")
        .order_by("name")
    )
