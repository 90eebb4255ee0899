"""Request guards that run before any view: a query parameter with NUL is a 400 (JSON under
/api/, the styled 400 page elsewhere), and an /api/ request whose Content-Length is over
STAGEWISE_MAX_BODY_BYTES is a 413 before its body is parsed or a view (or the database) is
touched. The JSON parser checks the same limit for bodies without a Content-Length."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware

from runs.api.errors import is_api
from runs.api.parsers import body_too_large_detail, content_length, max_body_bytes
from runs.input_checks import NUL_REASON, nul_in_query
from runs.services.datasets import max_upload_bytes


def body_limit(content_type: str) -> int:
    """The largest body a request of this Content-Type may declare: a multipart upload (a
    dataset file) has the upload limit, checked again as it streams in; any other body the
    JSON limit. The web server (webapp/web.py) applies the same rule before buffering."""
    multipart = content_type.split(";")[0].strip().lower() == "multipart/form-data"
    return max_upload_bytes() + 2**20 if multipart else max_body_bytes()


def refusal(request: HttpRequest) -> HttpResponse | None:
    """The answer to a request refused before its view runs, or None to let it through."""
    api = is_api(request)
    if api:
        limit = body_limit(request.content_type or "")
        declared = content_length(request.META)
        if declared is not None and declared > limit:
            return JsonResponse({"detail": body_too_large_detail(limit)}, status=413)
    bad = nul_in_query(request.GET)
    if bad is not None:
        if api:
            return JsonResponse(
                {"detail": "invalid input", "errors": {bad: [NUL_REASON]}}, status=400
            )
        raise BadRequest(f"the query parameter {bad!r} {NUL_REASON}")
    return None


@sync_and_async_middleware
def request_guard(get_response):
    # Both kinds, so that under ASGI this adds no thread switch to a request.
    if iscoroutinefunction(get_response):

        async def middleware(request):
            refused = refusal(request)
            return refused if refused is not None else await get_response(request)

    else:

        def middleware(request):
            refused = refusal(request)
            return refused if refused is not None else get_response(request)

    return middleware


class DatabaseOutage:
    """PostgreSQL unreachable (restarting, failed over): a 503 with Retry-After, JSON under
    /api/, instead of the 500 page, so that clients (the CLI, the HF callback, scripts) know
    to retry and nothing reads as a bug. Nothing was written: the request's transaction, if
    any, never committed."""

    RETRY_AFTER_S = 5

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from django.db import InterfaceError, OperationalError

        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        detail = "the database is unavailable; retry in a few seconds"
        if is_api(request):
            response = JsonResponse({"detail": detail}, status=503)
        else:
            response = HttpResponse(detail, status=503, content_type="text/plain")
        response["Retry-After"] = str(self.RETRY_AFTER_S)
        return response
