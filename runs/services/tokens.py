"""Making and revoking API tokens. The key is returned once, by ``token_create``; only its hash
is stored (runs/models/tokens.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

from runs.models import ApiToken, Membership, Team
from runs.models.tokens import DISPLAY_PREFIX_LENGTH, hash_key, new_key

MAX_EXPIRY_DAYS = 3650
NAME_MAX = ApiToken._meta.get_field("name").max_length


def token_expiry(
    *, expires_at: datetime | None = None, expires_in_days: int | None = None
) -> datetime | None:
    """The expiry from either spelling (none: the token never expires)."""
    if expires_at is not None and expires_in_days is not None:
        raise ValidationError({"expires_at": "give expires_at or expires_in_days, not both"})
    now = timezone.now()
    if expires_in_days is not None:
        if not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
            raise ValidationError(
                {"expires_in_days": f"must be between 1 and {MAX_EXPIRY_DAYS} days"}
            )
        return now + timedelta(days=expires_in_days)
    if expires_at is not None:
        if expires_at <= now:
            raise ValidationError({"expires_at": "must be in the future"})
        if expires_at > now + timedelta(days=MAX_EXPIRY_DAYS):
            raise ValidationError({"expires_at": f"must be within {MAX_EXPIRY_DAYS} days"})
    return expires_at


def token_create(
    *,
    user,
    team: Team,
    name: str,
    expires_at: datetime | None = None,
    expires_in_days: int | None = None,
) -> tuple[ApiToken, str]:
    """A new token of ``user`` in ``team`` (any role: the token gets that role) and its key,
    which is not stored anywhere and cannot be shown again."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "give the token a name (what or where it is used)"})
    if len(name) > NAME_MAX:
        raise ValidationError({"name": f"at most {NAME_MAX} characters"})
    if not Membership.objects.filter(user=user, team=team).exists():
        raise ValidationError({"team": f"you are not a member of team {team.slug!r}"})
    expiry = token_expiry(expires_at=expires_at, expires_in_days=expires_in_days)
    key = new_key()
    token = ApiToken.objects.create(
        user=user,
        team=team,
        name=name,
        prefix=key[:DISPLAY_PREFIX_LENGTH],
        key_hash=hash_key(key),
        expires_at=expiry,
    )
    return token, key


def token_revoke(*, token: ApiToken, by) -> ApiToken:
    """Revoke ``token`` (kept, with who revoked it and when, for the admin's audit); from now on
    it gets 401."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.revoked_by = by
        token.save(update_fields=["revoked_at", "revoked_by", "updated_at"])
    return token
