"""First-start setup: default team, default queue, first admin."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from runs.models import Membership, Queue, Role, Team

DEFAULT_TEAM = "default"
DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class BootstrapResult:
    team: Team
    queue: Queue
    admin_username: str | None  # set only when the admin was created now
    admin_password: str | None


@transaction.atomic
def bootstrap_install(
    *, admin_username: str = "admin", admin_password: str | None = None
) -> BootstrapResult:
    """Idempotent: creates what is missing, never changes what exists."""
    team, _ = Team.objects.get_or_create(slug=DEFAULT_TEAM, defaults={"name": "Default team"})
    queue, _ = Queue.objects.get_or_create(
        name=DEFAULT_QUEUE, defaults={"description": "Default queue", "max_concurrent": 1}
    )
    User = get_user_model()
    created_user = created_password = None
    if not User.objects.filter(is_superuser=True).exists():
        password = admin_password or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=admin_username, email="", password=password)
        Membership.objects.create(user=user, team=team, role=Role.ADMIN)
        created_user, created_password = admin_username, password
    return BootstrapResult(team, queue, created_user, created_password)
