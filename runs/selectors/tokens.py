"""Which API tokens a user may see and revoke: their own, and, for a team admin, every token
of the team (the tokens of its members)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from runs.models import ApiToken
from runs.selectors.teams import admin_team_ids_for


def _live() -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(revoked_at__isnull=True).select_related("user", "team")


def tokens_of_user(user) -> QuerySet[ApiToken]:
    """The user's own tokens that are not revoked (expired ones too: they can be cleaned up)."""
    return _live().filter(user=user)


def tokens_of_team(team_id: int) -> QuerySet[ApiToken]:
    return _live().filter(team_id=team_id)


def tokens_manageable_by(user) -> QuerySet[ApiToken]:
    """Tokens ``user`` may see one by one and revoke."""
    return _live().filter(Q(user=user) | Q(team_id__in=admin_team_ids_for(user)))
