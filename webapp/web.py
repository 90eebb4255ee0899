"""The web server: daphne, with request bodies bounded before they are buffered.

``python -m webapp.web -b HOST -p PORT webapp.asgi:application`` takes daphne's own arguments.

Why not plain daphne: daphne (through twisted) receives a whole request body before the
application runs and then puts all of it on the application's queue at once, so a 100 MB POST
costs the web process 100 MB before any of our code can refuse it (runs/middleware.py refuses
it only once the ASGI handler has read it). Here the declared Content-Length is checked as
soon as the headers are in: an oversized body is received into a sink that keeps nothing and
answered with the API's JSON 413; the application never sees it. Requests without a
Content-Length (chunked) keep daphne's path and are bounded by the JSON parser.
"""

from __future__ import annotations

import json
import sys


class _Discard:
    """A file twisted can write a body into that keeps nothing."""

    closed = False

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def read(self, *args) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True


def install() -> None:
    from daphne.http_protocol import WebRequest

    from runs.api.parsers import body_too_large_detail
    from runs.middleware import body_limit

    got_length, process = WebRequest.gotLength, WebRequest.process

    def bounded_got_length(self, length):
        self.refused_limit = None
        if length is not None:
            content_type = self.requestHeaders.getRawHeaders(b"content-type", [b""])[0]
            limit = body_limit(content_type.decode("latin-1"))
            if length > limit:
                self.refused_limit = limit
                self.content = _Discard()
                return
        got_length(self, length)

    def bounded_process(self):
        limit = getattr(self, "refused_limit", None)
        if limit is None:
            return process(self)
        body = json.dumps({"detail": body_too_large_detail(limit)}).encode()
        self.setResponseCode(413, b"Content Too Large")
        self.setHeader(b"Content-Type", b"application/json")
        self.setHeader(b"Content-Length", str(len(body)).encode())
        self.setHeader(b"Connection", b"close")
        self.write(body)
        self.finish()

    WebRequest.gotLength = bounded_got_length
    WebRequest.process = bounded_process


def main(argv: list[str]) -> None:
    import django

    django.setup()  # the limits are settings
    install()
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(argv)


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    main(sys.argv[1:])
