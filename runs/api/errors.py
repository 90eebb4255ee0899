"""One error shape for the whole API: {"detail": ..., "errors": {field: [reasons]}}.

Two layers use it. DRF views raise into ``exception_handler``. Everything Django answers
itself (an unmatched URL, a SuspiciousOperation, an uncaught exception) goes through the
``handler*`` views below, wired in webapp/urls.py: JSON under /api/, the styled 400/403/404/500
pages elsewhere. A client of the API never sees an HTML error page."""

from __future__ import annotations

from django.core.exceptions import BadRequest, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    JsonResponse,
)
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt, requires_csrf_token
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from runs.models import InvalidTransition
from runs.services.errors import Conflict

API_PREFIX = "/api/"


def exception_handler(exc, context):
    if isinstance(exc, InvalidTransition | Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DjangoValidationError):
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response({"detail": "invalid input", "errors": errors}, status=400)
    if isinstance(exc, RequestDataTooBig):  # a form body over DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    return drf_exception_handler(exc, context)


# ------------------------------------------------------------------ Django's error handlers


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX) or request.path_info == API_PREFIX[:-1]


def _message(exception: BaseException | None) -> str:
    """The message of an exception we raised on purpose (``Http404("run not found")``), or ""
    (a Resolver404's args are a dict of the patterns tried: never shown)."""
    if exception is None or isinstance(exception, Resolver404):
        return ""
    args = getattr(exception, "args", ())
    return args[0] if args and isinstance(args[0], str) else ""


def _page(request: HttpRequest, template: str, status_code: int, **context) -> HttpResponse:
    return render(request, template, context, status=status_code)


@requires_csrf_token
def bad_request(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    # BadRequest carries our own reason; other SuspiciousOperations keep theirs to the log.
    if isinstance(exception, RequestDataTooBig):
        reason, code = "the request body is too large", 413
    elif isinstance(exception, BadRequest):
        reason, code = _message(exception) or "bad request", 400
    else:
        reason, code = "bad request", 400
    if is_api(request):
        return JsonResponse({"detail": reason}, status=code)
    return _page(request, "400.html", code, reason=reason)


@requires_csrf_token
def permission_denied(request: HttpRequest, exception: BaseException | None = None):
    reason = _message(exception)
    if is_api(request):
        return JsonResponse(
            {"detail": reason or "You do not have permission to perform this action."}, status=403
        )
    return _page(request, "403.html", 403, reason=reason)


@requires_csrf_token
def page_not_found(request: HttpRequest, exception: BaseException | None = None):
    reason = _message(exception)
    if is_api(request):
        return JsonResponse({"detail": reason or f"no API endpoint at {request.path}"}, status=404)
    return _page(request, "404.html", 404, reason=reason, request_path=request.path)


@requires_csrf_token
def server_error(request: HttpRequest) -> HttpResponse:
    # Django has logged the exception. The page is rendered without the request's context:
    # what failed may be the database, which the context (request.user) would query again.
    if is_api(request):
        return JsonResponse({"detail": "internal error"}, status=500)
    return defaults.server_error(request, template_name="500.html")


@csrf_exempt  # nothing to protect; a POST without a token gets the JSON 404 too
def api_not_found(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """The last /api/ route: a JSON 404 for any URL under /api/ that no endpoint matched (also
    when DEBUG would show Django's HTML 404). Matching everything would stop APPEND_SLASH, so
    this does its job: a GET without the trailing slash of an endpoint is redirected to it."""
    path = request.path_info
    if not path.endswith("/"):
        try:
            match = resolve(path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            target = request.get_full_path(force_append_slash=True)
            if request.method in ("GET", "HEAD"):
                return HttpResponsePermanentRedirect(target)
            return JsonResponse(
                {"detail": f"no API endpoint at {request.path}; did you mean {path}/ ?"},
                status=404,
            )
    return page_not_found(request, Http404())
