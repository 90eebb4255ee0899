"""Which teams a user may read and write. Every view, selector and consumer scopes by these, so
a request authenticated by an API token (runs/api/auth.py), whose user object is marked with
the token's team by ``scope_to_team``, sees and writes that one team only, with the user's
role in it."""

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from runs.models import Membership, Role, Team

WRITE_ROLES = {Role.MEMBER, Role.ADMIN}
# The attribute set on a request's user object (never saved) by ``scope_to_team``.
SCOPED_TEAM_ATTR = "stagewise_scoped_team_id"


def scope_to_team(user, team_id: int) -> None:
    """Limit what ``user`` (this object: the request's user) may see to one team."""
    setattr(user, SCOPED_TEAM_ATTR, team_id)


def scoped_team_id(user) -> int | None:
    return getattr(user, SCOPED_TEAM_ATTR, None)


def _memberships(user) -> QuerySet[Membership]:
    qs = Membership.objects.filter(user=user)
    team_id = scoped_team_id(user)
    return qs if team_id is None else qs.filter(team_id=team_id)


def team_ids_for(user, *, write: bool = False) -> list[int]:
    if not user.is_authenticated:
        return []
    qs = _memberships(user)
    if write:
        qs = qs.filter(role__in=WRITE_ROLES)
    return list(qs.values_list("team_id", flat=True))


def admin_team_ids_for(user) -> list[int]:
    """Teams where ``user`` is a team admin (manages the team's members and their tokens)."""
    if not user.is_authenticated:
        return []
    return list(_memberships(user).filter(role=Role.ADMIN).values_list("team_id", flat=True))


def role_in(user, team_id: int) -> str | None:
    if not user.is_authenticated:
        return None
    return _memberships(user).filter(team_id=team_id).values_list("role", flat=True).first()


def teams_for(user) -> QuerySet[Team]:
    return Team.objects.filter(pk__in=team_ids_for(user))


def default_team_for(user) -> Team | None:
    if not user.is_authenticated:
        return None
    m = _memberships(user).select_related("team").order_by("created_at").first()
    return m.team if m else None


def visible_team(user, slug: object = None) -> Team | None:
    """The user's team named ``slug`` (a ValidationError on ``team`` if it is not one of
    theirs, the same for a team that does not exist), or their first team."""
    if slug is None or slug == "":
        return default_team_for(user)
    team = teams_for(user).filter(slug=slug).first() if isinstance(slug, str) else None
    if team is None:
        raise ValidationError({"team": ["not one of your teams"]})
    return team
