"""Real worker processes on a real (embedded) Redis, writing to the session's real database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.embedded import EmbeddedRedis

WorkerFactory = Callable[..., subprocess.Popen[bytes]]


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`hearth worker` as a child process, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    redis = EmbeddedRedis(tmp_path / "redis")
    yield redis.start()
    redis.stop()


@pytest.fixture
def worker_env(
    broker: str, pg_url: str, tmp_path: Path, env_without_hearth: dict[str, str]
) -> dict[str, str]:
    (tmp_path / "w").mkdir(exist_ok=True)
    return {
        **env_without_hearth,
        "DATABASE_URL": pg_url,
        "REDIS_URL": broker,
        "HEARTH_DATA_DIR": str(tmp_path / "data"),
        "HEARTH_WATCH_DIR": str(tmp_path / "w"),
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
    }


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start workers (extra settings as keyword arguments); all are stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**extra_env: str) -> subprocess.Popen[bytes]:
        procs.append(spawn_worker({**worker_env, **extra_env}, tmp_path / "worker.log"))
        return procs[-1]

    yield start
    stop_workers(procs)
