from django.db.models import QuerySet

from runs.models import Membership, Role, Team

WRITE_ROLES = {Role.MEMBER, Role.ADMIN}


def team_ids_for(user, *, write: bool = False) -> list[int]:
    if not user.is_authenticated:
        return []
    qs = Membership.objects.filter(user=user)
    if write:
        qs = qs.filter(role__in=WRITE_ROLES)
    return list(qs.values_list("team_id", flat=True))


def teams_for(user) -> QuerySet[Team]:
    return Team.objects.filter(pk__in=team_ids_for(user))


def default_team_for(user) -> Team | None:
    m = Membership.objects.filter(user=user).select_related("team").order_by("created_at").first()
    return m.team if m else None
