"""`manage.py up`: migrations, first-start setup, web server, a training worker, the control
worker and the scheduler.

The control worker consumes only the control queue (settings.STAGEWISE_CONTROL_QUEUE), where
the scheduler's tasks go: lease expiry, dispatch and queue-consumer sync keep running while the
training worker is busy with a stage for hours.

Children are started in their own sessions so a terminal Ctrl-C reaches only this process,
which then asks them all to stop, kills those still running after 10 s and, in embedded mode,
stops the embedded PostgreSQL and Redis. A worker killed mid-stage is harmless: its lease
expires and the next worker resumes from the latest checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from runs.services.queues import ALL_QUEUES_NODE, training_queue_names
from webapp.embedded import EmbeddedError, check_data_dir, stop_all


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


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
            "--queues",
            default="",
            help="comma-separated queues for the training worker (default: all)",
        )

    def handle(self, *args, **opts):
        host, port = opts["host"], opts["port"]
        data_dir = Path(settings.STAGEWISE_DATA_DIR)
        try:
            check_data_dir(data_dir)
        except EmbeddedError as exc:
            raise CommandError(str(exc)) from None
        if not _port_free(host, port):
            raise CommandError(
                f"port {port} on {host} is already in use; choose another with --port"
            )
        control = settings.STAGEWISE_CONTROL_QUEUE
        if control in opts["queues"].split(","):
            raise CommandError(
                f"--queues: {control} is the control worker's queue, not a training queue"
            )

        call_command("migrate", interactive=False, verbosity=0)
        self._first_start(demo=opts["demo"])

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        py = sys.executable
        children: list[tuple[str, subprocess.Popen]] = []

        def spawn(name: str, cmd: list[str]) -> None:
            children.append((name, subprocess.Popen(cmd, env=env, start_new_session=True)))

        spawn("web", [py, "-m", "daphne", "-b", host, "-p", str(port), "webapp.asgi:application"])
        if not opts["no_worker"]:
            # Without --queues the worker is named as an all-queue worker, so queues created
            # later are added to it (runs/services/queues.py); with --queues it keeps them.
            queues, node = opts["queues"], "up-worker@%h"
            if not queues:
                queues, node = self._all_queues(), f"{ALL_QUEUES_NODE}@%h"
            spawn("worker", [py, "-m", "celery", "-A", "webapp", "worker", "-Q", queues,
                             "--concurrency", "1", "--loglevel", "WARNING", "-n", node])  # fmt: skip
            # The scheduler's tasks only (webapp/settings.py), so they never wait on a stage.
            spawn("control", [py, "-m", "celery", "-A", "webapp", "worker", "-Q", control,
                              "--concurrency", "1", "-P", "solo", "--loglevel", "WARNING",
                              "-n", "control@%h"])  # fmt: skip
            spawn("scheduler", [py, "-m", "celery", "-A", "webapp", "beat", "--loglevel", "WARNING",
                                "-s", str(data_dir / "celerybeat-schedule")])  # fmt: skip
        self.stdout.write(f"Stagewise is up at http://{host}:{port}/  (Ctrl-C to stop)")

        stopping = {"now": False}

        def on_signal(signum, frame):
            stopping["now"] = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stopping["now"]:
                for name, proc in children:
                    if proc.poll() is not None:
                        self.stderr.write(f"stagewise: {name} exited with code {proc.returncode}")
                        stopping["now"] = True
                time.sleep(0.3)
        finally:
            self._stop(children)
            if settings.STAGEWISE_EMBEDDED:
                stop_all(data_dir)
            self.stdout.write("Stagewise stopped.")

    def _first_start(self, *, demo: bool) -> None:
        from runs.services.bootstrap import bootstrap_install

        result = bootstrap_install(
            admin_password=os.environ.get("STAGEWISE_ADMIN_PASSWORD") or None
        )
        if result.admin_username:
            shown = (
                "(from STAGEWISE_ADMIN_PASSWORD)"
                if os.environ.get("STAGEWISE_ADMIN_PASSWORD")
                else result.admin_password
            )
            self.stdout.write(
                f"First start: admin login is  {result.admin_username} / {shown}  "
                "(shown once; change it in /admin/)"
            )
        from runs.services.demo import seed_examples, submit_demo_run

        seed_examples(team=result.team)
        if demo:
            run = submit_demo_run(team=result.team, queue=result.queue)
            self.stdout.write(f"Demo run #{run.pk} submitted: {run.name}")

    @staticmethod
    def _all_queues() -> str:
        return ",".join(training_queue_names()) or "default"

    @staticmethod
    def _stop(children: list[tuple[str, subprocess.Popen]]) -> None:
        for _, proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
