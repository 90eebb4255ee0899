"""The web server: daphne, with request bodies bounded before they are buffered, in one or
several processes.

``python -m webapp.web -b HOST -p PORT webapp.asgi:application`` takes daphne's own arguments.
``--processes N`` (N > 1) opens the listening socket once and runs N daphne processes on it
(``--fd``; the kernel spreads connections between them), restarted when one exits
(webapp/supervisor.py), until SIGTERM or Ctrl-C. Websockets work across them: each process
joins the same channel-layer groups in Redis, so a push reaches a page on any of them.

Why not plain daphne: daphne (through twisted) receives a whole request body before the
application runs and then puts all of it on the application's queue at once, so a 100 MB POST
costs the web process 100 MB before any of our code can refuse it (runs/middleware.py refuses
it only once the ASGI handler has read it). Here the declared Content-Length is checked as
soon as the headers are in: an oversized body is received into a sink that keeps nothing and
answered with the API's JSON 413; the application never sees it. Requests without a
Content-Length (chunked) keep daphne's path and are bounded by the JSON parser.
"""

from __future__ import annotations

import argparse
import json
import socket
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


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _take(argv: list[str], *specs: tuple[tuple[str, ...], type, object]):
    """The options ``specs`` ((flags, type, default)) out of ``argv``, and the rest."""
    parser = argparse.ArgumentParser(add_help=False)
    for flags, kind, default in specs:
        parser.add_argument(*flags, type=kind, default=default)
    return parser.parse_known_args(argv)


def serve_processes(argv: list[str], processes: int) -> None:
    """N daphne processes on one socket, kept running until SIGTERM / Ctrl-C."""
    import os
    import signal

    from webapp.supervisor import Child, Supervisor

    where, rest = _take(argv, (("-b", "--bind"), str, "127.0.0.1"), (("-p", "--port"), int, 8000))
    host, port = where.bind, where.port
    sock = _listening_socket(host, port)
    cmd = [sys.executable, "-m", "webapp.web", "--fd", str(sock.fileno()), *rest]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    fds = [sock.fileno()]
    children = [
        Child(f"web-{i}", cmd, env, pass_fds=fds, own_session=False) for i in range(processes)
    ]
    supervisor = Supervisor(children, log=lambda line: print(line, file=sys.stderr, flush=True))

    def on_signal(signum, frame):
        supervisor.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"web: {processes} processes on {host}:{port}", file=sys.stderr, flush=True)
    supervisor.run()


def main(argv: list[str]) -> None:
    ours, argv = _take(argv, (("--processes",), int, 1))
    if ours.processes > 1:
        return serve_processes(argv, ours.processes)
    import django

    django.setup()  # the limits are settings
    install()
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(argv)


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    main(sys.argv[1:])
