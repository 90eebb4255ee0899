"""orjson for the API's JSON bodies: metric batches are large and json.loads was a visible
share of a 10,000-point POST. NaN/Infinity literals are refused by orjson (a 400).

A body is bounded before anything else: over STAGEWISE_MAX_BODY_BYTES it is a 413, decided
from its Content-Length without reading it (and without one, at most limit + 1 bytes are
read). A parsed body is then refused with a 400 if it nests deeper than
STAGEWISE_MAX_JSON_DEPTH levels (validators downstream recurse: a plan 1,000 levels deep was a
RecursionError) or holds NUL in any string or key (Postgres refuses it in text and jsonb); the
NUL error names the JSON path of the string (``plan.stages.1.name``)."""

from __future__ import annotations

import orjson
from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

from runs.input_checks import NUL_REASON, find_nul, invalid, nesting_exceeds

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # a 50,000-point metric batch is about 4.6 MB
DEFAULT_MAX_JSON_DEPTH = 64
_ESCAPED_NUL = b"\\u0000"  # the only way to write NUL in valid JSON


class RequestTooLarge(APIException):
    """A body over the limit: a 413 with the reason, through the API's exception handler."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self, limit: int):
        super().__init__(body_too_large_detail(limit))


def body_too_large_detail(limit: int) -> str:
    return f"the request body is larger than {limit / 1024 / 1024:g} MB, the limit for this API"


def max_body_bytes() -> int:
    return int(getattr(settings, "STAGEWISE_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))


def max_json_depth() -> int:
    return int(getattr(settings, "STAGEWISE_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH))


def content_length(meta) -> int | None:
    """The request's declared body size, or None when absent or not a number."""
    try:
        value = int(meta.get("CONTENT_LENGTH") or "")
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def read_bounded(stream, meta, limit: int) -> bytes:
    """The body, or RequestTooLarge: from the Content-Length when there is one (nothing read),
    else after reading at most ``limit + 1`` bytes."""
    declared = content_length(meta)
    if declared is not None and declared > limit:
        raise RequestTooLarge(limit)
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise RequestTooLarge(limit)
    return raw


def check_json(data, raw: bytes) -> None:
    """Refuse a parsed body nested too deep (ParseError) or holding NUL (a field error)."""
    depth = max_json_depth()
    if nesting_exceeds(data, depth):
        raise ParseError(f"JSON nested deeper than {depth} levels")
    if _ESCAPED_NUL in raw:  # cheap on the raw bytes; "\\u0000" (escaped backslash) also hits
        path = find_nul(data)
        if path is not None:
            raise invalid(path, NUL_REASON)


class OrjsonParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        meta = getattr(request, "META", {}) or {}
        raw = read_bounded(stream, meta, max_body_bytes())
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        check_json(data, raw)
        return data
