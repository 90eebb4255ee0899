"""API token authentication: ``Authorization: Bearer <key>`` (or ``Token <key>``, the older
spelling clients already send). The key is looked up by its sha256; the request's user comes
back marked with the token's team, so that ``team_ids_for`` (runs/selectors/teams.py), which
every view and selector scopes by, sees that one team only."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from runs.models import ApiToken
from runs.models.tokens import hash_key
from runs.selectors.teams import scope_to_team

KEYWORDS = ("bearer", "token")
# last_used_at is written at most this often per token, not once per request (the metrics
# hot path sends many requests a second from one token).
LAST_USED_RESOLUTION = timedelta(seconds=60)


def _touch(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    # Conditional, so concurrent requests of one token write it once.
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now)
    token.last_used_at = now


class ApiTokenAuthentication(authentication.BaseAuthentication):
    www_authenticate_realm = "api"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower().decode(errors="replace") not in KEYWORDS:
            return None  # no token: the session may still authenticate
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "invalid Authorization header: expected 'Bearer <key>'"
            )
        try:
            key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid token") from None
        return self.authenticate_key(key)

    def authenticate_key(self, key: str):
        token = ApiToken.objects.select_related("user").filter(key_hash=hash_key(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("invalid token")
        if token.is_revoked:
            raise exceptions.AuthenticationFailed("token revoked")
        if token.is_expired:
            raise exceptions.AuthenticationFailed("token expired")
        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("user inactive")
        _touch(token)
        scope_to_team(user, token.team_id)
        return user, token

    def authenticate_header(self, request) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """The token in the OpenAPI schema (/api/schema/), as HTTP bearer authentication."""

    target_class = ApiTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token from /settings/tokens/ "
            "(`Authorization: Token <key>` is accepted too).",
        }
