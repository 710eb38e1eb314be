"""A real Celery worker process on a real (embedded) Redis, writing to the real database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.cli.embedded import EmbeddedRedis
from workers.celery_app import TASK_INGEST, TASK_RESCAN, create_celery

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    redis = EmbeddedRedis(tmp_path / "redis")
    url = redis.start()
    yield url
    redis.stop()


@pytest.fixture
def worker(
    broker: str, pg_url: str, tmp_path: Path, env_without_hearth: dict[str, str]
) -> Iterator[dict[str, str]]:
    env = {
        **env_without_hearth,
        "DATABASE_URL": pg_url,
        "REDIS_URL": broker,
        "HEARTH_DATA_DIR": str(tmp_path / "data"),
        "HEARTH_WATCH_DIR": str(tmp_path / "w"),
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield env
    proc.terminate()
    assert proc.wait(30) == 0
    log.close()


def wait_for(
    db: psycopg.Connection,
    sql: str,
    args: tuple,
    expected: object,  # type: ignore[type-arg]
    timeout_s: float = 120,
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        row = db.execute(sql, args).fetchone()
        db.commit()
        if row and row[0] == expected:
            return
        assert time.monotonic() < deadline, f"still {row!r}, wanted {expected!r}"
        time.sleep(0.3)


def test_worker_indexes_a_queued_file_and_rescan_removes_a_vanished_one(
    db: psycopg.Connection, worker: dict[str, str], tmp_path: Path
) -> None:
    from core.settings import get_settings

    watched = Path(worker["HEARTH_WATCH_DIR"])
    watched.mkdir()
    f = watched / "recipe.md"
    f.write_text("# Bread\n\nKnead the dough for ten minutes, then let it rise.\n")
    app = create_celery(get_settings(), worker["REDIS_URL"])
    app.send_task(TASK_INGEST, args=[str(f)])
    sql = "SELECT status FROM documents WHERE path = %s"
    wait_for(db, sql, (str(f.resolve()),), "indexed")
    n = db.execute("SELECT count(*) FROM chunks").fetchone()
    assert n and n[0] >= 1

    os.unlink(f)
    (watched / "new.txt").write_text("A file that appeared while nobody was watching.")
    app.send_task(TASK_RESCAN)
    wait_for(db, sql, (str(f.resolve()),), "deleted")
    wait_for(db, sql, (str((watched / "new.txt").resolve()),), "indexed")
