"""A real Celery worker process on a real (embedded) Redis, writing to the real database."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest

from tests.workers.conftest import WorkerFactory
from workers.celery_app import TASK_INGEST, TASK_RESCAN, create_celery

pytestmark = pytest.mark.slow


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
    db: psycopg.Connection, worker_env: dict[str, str], start_worker: WorkerFactory
) -> None:
    start_worker()
    worker = worker_env
    from core.settings import get_settings

    watched = Path(worker["HEARTH_WATCH_DIR"])
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
