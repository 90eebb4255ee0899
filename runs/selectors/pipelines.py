import json
from pathlib import Path

from django.db.models import QuerySet

from runs.models import Pipeline
from runs.selectors.teams import team_ids_for
from runs.services.demo import EXAMPLES_DIR


def pipeline_list(*, user) -> QuerySet[Pipeline]:
    """The user's teams' pipelines, by name."""
    return (
        Pipeline.objects.filter(team_id__in=team_ids_for(user))
        .select_related("team")
        .order_by("name")
    )


def example_plan(name: str) -> dict | None:
    """The example plan shipped as ``trainers/examples/<name>.json`` (a path is reduced to its
    last part), or None when there is no example of that name."""
    path = EXAMPLES_DIR / f"{Path(name).name}.json"
    # listed, not stat'ed: a 300-character name made is_file() raise
    if path not in EXAMPLES_DIR.glob("*.json") or not path.is_file():
        return None
    return json.loads(path.read_text())
