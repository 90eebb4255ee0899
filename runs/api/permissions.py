from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import BasePermission

from runs.models import ApiToken, Run, Team
from runs.selectors.runs import run_get
from runs.selectors.teams import admin_team_ids_for, team_ids_for


class SessionOnly(BasePermission):
    """Only a signed-in browser session, not an API token: a token cannot mint or revoke
    tokens, so a leaked one cannot make itself a successor."""

    message = "API tokens cannot manage tokens: sign in and use /settings/tokens/ or a session"

    def has_permission(self, request, view) -> bool:
        return not isinstance(request.auth, ApiToken)


def visible_run(request, run_id: int) -> Run:
    run = run_get(user=request.user, run_id=run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def writable_run(request, run_id: int) -> Run:
    """A run the user may write to, with only id, team, external, free_form and state loaded, in two
    small queries (the metrics hot path needs no more): 404 when not visible, 403 when
    read-only."""
    run = (
        Run.objects.filter(pk=run_id, team_id__in=team_ids_for(request.user))
        .only("id", "team_id", "external", "free_form", "state")
        .first()
    )
    if run is None:
        raise NotFound(f"run {run_id} not found")
    require_write(request, run.team_id)
    return run


def require_write(request, team_id: int) -> None:
    if team_id not in team_ids_for(request.user, write=True):
        raise PermissionDenied("your role in this team is read-only (viewer)")


def team_for_write(request, slug: str | None) -> Team:
    ids = team_ids_for(request.user, write=True)
    qs = Team.objects.filter(pk__in=ids)
    team = qs.filter(slug=slug).first() if slug else qs.order_by("pk").first()
    if team is None:
        if slug and Team.objects.filter(slug=slug, pk__in=team_ids_for(request.user)).exists():
            raise PermissionDenied(f"your role in team {slug!r} is read-only (viewer)")
        raise PermissionDenied(
            f"you are not a member of team {slug!r}" if slug else "you are not in any team"
        )
    return team


def team_for_admin(request, slug: str) -> Team:
    """A team where the user is a team admin (manages its members' tokens); 403 otherwise, with
    the same answer whether or not the team exists."""
    team = Team.objects.filter(slug=slug, pk__in=admin_team_ids_for(request.user)).first()
    if team is None:
        raise PermissionDenied(f"you are not an admin of team {slug!r}")
    return team
