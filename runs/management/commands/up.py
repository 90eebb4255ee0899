"""`manage.py up`: migrations, first-start setup, web server, a training worker, the control
worker and the scheduler, kept running by webapp/supervisor.py.

The control worker consumes only the control queue (settings.STAGEWISE_CONTROL_QUEUE), where
the scheduler's tasks go: lease expiry, dispatch and queue-consumer sync keep running while the
training worker is busy with a stage for hours.

A child that exits, and in embedded mode a PostgreSQL or Redis that dies, is started again
after a backoff, with one line on stderr. A worker killed mid-stage is harmless: its lease
expires and the restarted worker resumes the stage from the latest checkpoint; a web server
restart does not touch the running stage at all. Only Ctrl-C or SIGTERM to this process stops
everything: the children are asked to stop, those still running after 10 s are killed and, in
embedded mode, the embedded PostgreSQL and Redis are stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from functools import partial
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from runs.services.queues import ALL_QUEUES_NODE, training_queue_names
from webapp import embedded
from webapp.embedded import EmbeddedError, check_data_dir
from webapp.supervisor import Child, Embedded, Supervisor

# name, health check, start (or attach): see webapp/embedded.py
_EMBEDDED_SERVERS = [
    ("postgres", embedded.postgres_running, embedded.ensure_postgres),
    ("redis", embedded.redis_running, embedded.ensure_redis),
]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def web_processes(given: int | None) -> int:
    """How many web server processes ``up`` runs: sized to the machine unless given."""
    if given is None:
        given = int(os.environ.get("STAGEWISE_WEB_PROCESSES") or 0) or None
    if given is None:
        given = min(4, max(2, (os.cpu_count() or 2) // 2))
    if given < 1:
        raise CommandError("--web-processes must be at least 1")
    return given


class Command(BaseCommand):
    help = (
        "Start Stagewise on this machine: database, web server, a training worker, the control "
        "worker and the scheduler."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--demo", action="store_true", help="submit a demo run on start")
        parser.add_argument(
            "--no-worker", action="store_true", help="web server only: no workers, no scheduler"
        )
        parser.add_argument(
            "--web-processes",
            type=int,
            default=None,
            help="HTTP/websocket server processes (default: $STAGEWISE_WEB_PROCESSES, else "
            "half the CPU cores, at least 2 and at most 4)",
        )
        parser.add_argument(
            "--queues",
            default="",
            help="comma-separated queues for the training worker (default: all)",
        )

    def handle(self, *args, **opts):
        host, port = opts["host"], opts["port"]
        data_dir = Path(settings.STAGEWISE_DATA_DIR)
        self._check_can_start(data_dir, host, port, opts["queues"])
        call_command("bootstrap", demo=opts["demo"], stdout=self.stdout)
        services = self._services(data_dir, host, port, opts)
        self._supervise(services, data_dir, host, port)

    @staticmethod
    def _check_can_start(data_dir: Path, host: str, port: int, queues: str) -> None:
        """Refuse, with one line, what would fail after the start: an unusable data directory,
        a taken port, the control queue given as a training queue."""
        try:
            check_data_dir(data_dir)
        except EmbeddedError as exc:
            raise CommandError(str(exc)) from None
        if not _port_free(host, port):
            raise CommandError(
                f"port {port} on {host} is already in use; choose another with --port"
            )
        control = settings.STAGEWISE_CONTROL_QUEUE
        if control in queues.split(","):
            raise CommandError(
                f"--queues: {control} is the control worker's queue, not a training queue"
            )

    def _services(self, data_dir: Path, host: str, port: int, opts) -> list[Child | Embedded]:
        """What the supervisor keeps running: the embedded servers this process owns, the web
        server and (unless --no-worker) the training worker, the control worker and the
        scheduler."""
        # The mode is passed on explicitly, so every child reads the settings this process read
        # (webapp/settings.py: the URLs it inherits would otherwise mean "deployment").
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "STAGEWISE_EMBEDDED": "true" if settings.STAGEWISE_EMBEDDED else "false"}  # fmt: skip
        py = sys.executable
        # The embedded servers come first: after a crash, the children need them back.
        services: list[Child | Embedded] = [
            Embedded(name, partial(running, data_dir), partial(ensure, data_dir))
            for name, running, ensure in _EMBEDDED_SERVERS
            if name in settings.STAGEWISE_EMBEDDED_SERVERS
        ]

        def child(name: str, cmd: list[str]) -> None:
            services.append(Child(name, cmd, env))

        web = [py, "-m", "webapp.web", "--processes", str(web_processes(opts["web_processes"]))]
        child("web", [*web, "-b", host, "-p", str(port), "webapp.asgi:application"])
        if not opts["no_worker"]:
            # Without --queues the worker is named as an all-queue worker, so queues created
            # later are added to it (runs/services/queues.py); with --queues it keeps them.
            queues, node = opts["queues"], "up-worker@%h"
            if not queues:
                queues, node = self._all_queues(), f"{ALL_QUEUES_NODE}@%h"
            child("worker", [py, "-m", "celery", "-A", "webapp", "worker", "-Q", queues,
                             "--concurrency", "1", "--loglevel", "WARNING", "-n", node])  # fmt: skip
            # The scheduler's tasks only (webapp/settings.py), so they never wait on a stage.
            control = settings.STAGEWISE_CONTROL_QUEUE
            child("control", [py, "-m", "celery", "-A", "webapp", "worker", "-Q", control,
                              "--concurrency", "1", "-P", "solo", "--loglevel", "WARNING",
                              "-n", "control@%h"])  # fmt: skip
            child("scheduler", [py, "-m", "celery", "-A", "webapp", "beat", "--loglevel", "WARNING",
                                "-s", str(data_dir / "celerybeat-schedule")])  # fmt: skip
        return services

    def _supervise(
        self, services: list[Child | Embedded], data_dir: Path, host: str, port: int
    ) -> None:
        """Keep ``services`` running until Ctrl-C or SIGTERM, then stop the embedded servers."""
        supervisor = Supervisor(services, log=self.stderr.write)

        def on_signal(signum, frame):
            supervisor.stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        self.stdout.write(f"Stagewise is up at http://{host}:{port}/  (Ctrl-C to stop)")
        owned = settings.STAGEWISE_EMBEDDED_SERVERS
        try:
            supervisor.run()  # returns once a signal asked to stop, with every child stopped
        finally:
            # Redis first (nothing durable), then the database.
            if "redis" in owned:
                embedded.stop_redis(data_dir)
            if "postgres" in owned:
                embedded.stop_postgres(data_dir)
            self.stdout.write("Stagewise stopped.")

    @staticmethod
    def _all_queues() -> str:
        return ",".join(training_queue_names()) or "default"
