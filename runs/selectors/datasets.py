"""Datasets and their versions as a user may read them: their teams' only."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from runs.models import Dataset, DatasetVersion
from runs.selectors.teams import team_ids_for


def dataset_list(*, user) -> QuerySet[Dataset]:
    """The user's teams' datasets by name, each with its versions (newest first, with who
    made them) in one more query."""
    versions = DatasetVersion.objects.select_related("created_by", "dataset").order_by("-version")
    return (
        Dataset.objects.filter(team_id__in=team_ids_for(user))
        .select_related("team")
        .prefetch_related(Prefetch("versions", queryset=versions))
        .order_by("name", "pk")
    )


def dataset_version_list(*, user) -> QuerySet[DatasetVersion]:
    """The versions of the user's teams' datasets, each with its dataset."""
    qs = DatasetVersion.objects.filter(dataset__team_id__in=team_ids_for(user))
    return qs.select_related("dataset")
