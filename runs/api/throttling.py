"""API rate limits: DRF's throttling, counted per API token (per user for browser sessions) in
Django's cache, which is Redis (webapp/settings.py CACHES) so every web process shares the
counts. Over the rate, DRF answers 429 with Retry-After.

Two scopes, rates in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] (README "Configuration"):
``ingest`` for metric batches (POST /api/runs/{id}/metrics/, sent many a second by a training
client), ``user`` for every other request.

Redis away (restarting, failed over): the request goes through uncounted, with a warning in
the log. Postgres, which answers the request, is up; refusing every API call (a 500, as it was)
because a counter cannot be read would turn a cache outage into an API outage."""

from __future__ import annotations

import logging

import redis
from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from runs.models import ApiToken

# URL names (runs/api/urls.py) counted in the ``ingest`` scope when POSTed to.
INGEST_URL_NAMES = frozenset({"api-run-metrics"})
log = logging.getLogger(__name__)


def is_ingest(request) -> bool:
    match = getattr(request, "resolver_match", None)
    return request.method == "POST" and match is not None and match.url_name in INGEST_URL_NAMES


class _PerTokenRateThrottle(SimpleRateThrottle):
    def get_rate(self) -> str | None:
        # Read the rates now, not at import (SimpleRateThrottle.THROTTLE_RATES), so that a
        # changed setting (a test's override) applies.
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"no throttle rate set for scope {self.scope!r}") from None

    def get_cache_key(self, request, view) -> str:
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"anon-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def applies_to(self, request) -> bool:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        if not self.applies_to(request):
            return True
        try:
            return super().allow_request(request, view)
        except redis.RedisError as exc:
            log.warning("rate limit not checked, the cache (Redis) is unavailable: %s", exc)
            return True


class ApiUserThrottle(_PerTokenRateThrottle):
    scope = "user"

    def applies_to(self, request) -> bool:
        return not is_ingest(request)


class IngestThrottle(_PerTokenRateThrottle):
    scope = "ingest"

    def applies_to(self, request) -> bool:
        return is_ingest(request)
