"""Operations endpoints, outside /api/: ``/healthz`` (the process answers: liveness),
``/readyz`` (Postgres, Redis and migrations: readiness) and ``/metrics`` (Prometheus text).

``/healthz`` and ``/readyz`` are open (load balancers and orchestrators call them) and say
nothing but check names and reasons. ``/metrics`` names queues, so it needs the bearer token
``STAGEWISE_METRICS_TOKEN`` when that is set, else a staff session or a staff API token."""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from rest_framework.exceptions import AuthenticationFailed

from runs.api.auth import ApiTokenAuthentication
from runs.consumers import open_connections
from runs.selectors.ops import OpsCollector, readiness

_registry = CollectorRegistry()
_registry.register(OpsCollector(open_connections))


@csrf_exempt  # a POST is a 405 here, not the CSRF page
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    # the process id tells a multi-process web tier's processes apart (webapp/web.py)
    return JsonResponse({"status": "ok", "process": os.getpid()})


@csrf_exempt  # a POST is a 405 here, not the CSRF page
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness()
    ready = all(v is None for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JsonResponse(body, status=200 if ready else 503)


def _may_scrape(request: HttpRequest) -> bool:
    token = getattr(settings, "STAGEWISE_METRICS_TOKEN", "")
    header = request.headers.get("Authorization", "")
    if token:
        return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())
    if request.user.is_authenticated:
        return request.user.is_staff
    try:
        found = ApiTokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return found is not None and found[0].is_staff


@csrf_exempt  # a POST is a 405 here, not the CSRF page
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _may_scrape(request):
        why = "metrics need STAGEWISE_METRICS_TOKEN as a bearer token, or a staff account"
        return JsonResponse({"detail": why}, status=403)
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)
