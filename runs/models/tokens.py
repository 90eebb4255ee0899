"""Personal API tokens. The key is shown once, when the token is made; the database keeps only
its sha256 (a key is 256 random bits, so a plain hash is enough: nothing to brute-force) and a
short non-secret prefix to tell tokens apart in lists. A token acts for its user in one team
only, with the user's role in that team (runs/selectors/teams.py)."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from runs.models.base import TimeStampedModel
from runs.models.teams import Team

KEY_PREFIX = "sw_"
# Shown in lists: "sw_" and the first 8 characters of the random part (48 of its 256 bits).
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiToken(TimeStampedModel):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=DISPLAY_PREFIX_LENGTH)
    key_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["team", "revoked_at"], name="apitoken_team_revoked")]

    def __str__(self) -> str:
        return f"{self.prefix}… {self.name} ({self.user}, {self.team})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return not self.is_revoked and not self.is_expired
