"""A real worker process counts its tasks, their outcomes and its embedding calls in Redis, and
the API's /metrics relays those totals (workers.metrics, api.routes.metrics)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from tests.api.test_metrics import scrape, value
from tests.factories import HashEmbedder
from tests.workers.conftest import WorkerFactory
from workers.celery_app import TASK_INGEST, create_celery
from workers.metrics import EMBED_KEY, FILES_KEY, TASKS_KEY, bucket, record

pytestmark = pytest.mark.slow

TASK = TASK_INGEST


def test_bucket_is_the_smallest_bound_that_holds_the_call() -> None:
    assert [bucket(n) for n in (1, 2, 3, 50, 51, 2000, 2001)] == [
        "1",
        "2",
        "5",
        "50",
        "100",
        "2000",
        "+Inf",
    ]


def test_a_batch_tasks_files_are_each_counted(broker: str) -> None:
    """A batch task returns one result per file: each is counted as a single task's would be."""
    import redis

    from core.settings import redis_client_url

    batch = [
        {"path": "/w/a.md", "status": "indexed", "chunks": 3, "error": None},
        {"path": "/w/b.md", "status": "indexed", "chunks": 40, "error": None},
        {"path": "/w/c.pdf", "status": "failed", "chunks": 0, "error": "not a PDF"},
        "not a result",
    ]
    record(broker, "hearth.ingest_files", "SUCCESS", batch)
    r = redis.Redis.from_url(redis_client_url(broker))
    assert r.hgetall(TASKS_KEY) == {b"hearth.ingest_files|SUCCESS": b"1"}
    assert r.hgetall(FILES_KEY) == {b"indexed": b"2", b"failed": b"1"}
    assert r.hgetall(EMBED_KEY) == {b"le:5": b"1", b"le:50": b"1", b"sum": b"43", b"count": b"2"}


def test_worker_totals_reach_metrics(
    db: psycopg.Connection, worker_env: dict[str, str], start_worker: WorkerFactory
) -> None:
    watched = Path(worker_env["HEARTH_WATCH_DIR"])
    log = watched.parent / "worker.log"
    good = watched / "bread.md"
    good.write_text("# Bread\n\nKnead the dough for ten minutes, then let it rise.\n")
    empty = watched / "empty.txt"
    empty.write_text("")
    admin = accounts.issue_token(db, accounts.ensure_user(db, "root", "admin"), "metrics")
    db.commit()
    start_worker()
    celery = create_celery(get_settings(), worker_env["REDIS_URL"])
    try:
        celery.send_task(TASK, args=[str(good)])
        celery.send_task(TASK, args=[str(empty)])
        celery.send_task(TASK, args=[["not", "a", "path"]])  # the task raises: a FAILURE
    finally:
        celery.close()

    settings = get_settings(
        database_url=worker_env["DATABASE_URL"], redis_url=worker_env["REDIS_URL"]
    )
    with TestClient(create_app(settings, embedder=HashEmbedder())) as c:
        deadline = time.monotonic() + 180
        while True:
            m = scrape(c, admin)
            done = sum(
                value(m, "hearth_worker_tasks_total", task=TASK, state=s)
                for s in ("SUCCESS", "FAILURE")
            )
            if done >= 3:
                break
            assert time.monotonic() < deadline, log.read_text()[-5000:]
            time.sleep(0.5)
    assert value(m, "hearth_worker_tasks_total", task=TASK, state="SUCCESS") == 2
    assert value(m, "hearth_worker_tasks_total", task=TASK, state="FAILURE") == 1
    assert value(m, "hearth_ingest_files_total", outcome="indexed") == 1
    assert value(m, "hearth_ingest_files_total", outcome="failed") == 1  # the empty file
    chunks = db.execute(
        "SELECT chunk_count FROM documents WHERE path = %s", (str(good.resolve()),)
    ).fetchone()
    assert chunks and chunks[0] >= 1
    assert value(m, "hearth_embed_texts_per_call_count") == 1
    assert value(m, "hearth_embed_texts_per_call_sum") == chunks[0]
    assert value(m, "hearth_embed_texts_per_call_bucket", le="+Inf") == 1
    assert value(m, "hearth_embed_texts_per_call_bucket", le=bucket(chunks[0])) == 1
