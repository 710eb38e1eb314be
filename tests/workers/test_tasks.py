"""Task bodies called as functions, in this process, on the real database (no worker, never
task_always_eager): the request-log pruning that beat runs, and that beat does run it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from core.settings import get_settings
from workers import tasks
from workers.celery_app import TASK_PRUNE_LOG, create_celery

AGES = {  # route -> age of the row
    "an hour": "1 hour",
    "6 days": "6 days",
    "7 days less an hour": "7 days - 1 hour",
    "7 days and an hour": "7 days 1 hour",
    "8 days": "8 days",
    "a year": "365 days",
}


@pytest.fixture
def prune(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], int]]:
    """Run the task's body with REQUEST_LOG_DAYS=days, as a worker process would."""
    monkeypatch.setenv("DATABASE_URL", pg_url)
    tasks.context.cache_clear()
    ctx = tasks.context()  # the worker's per-process context, on the test database

    def run(days: int) -> int:
        monkeypatch.setenv("REQUEST_LOG_DAYS", str(days))
        ctx.settings = get_settings()
        return int(tasks.prune_request_log.run())

    yield run
    ctx.conn.close()
    tasks.context.cache_clear()


@pytest.fixture
def log_rows(db: psycopg.Connection) -> Callable[[], set[str]]:
    db.execute("TRUNCATE request_log")
    for name, age in AGES.items():
        db.execute(
            "INSERT INTO request_log (at, method, route, status, latency_ms)"
            " VALUES (now() - %s::interval, 'GET', %s, 200, 1.0)",
            (age, name),
        )
    db.commit()

    def left() -> set[str]:
        return {r[0] for r in db.execute("SELECT route FROM request_log").fetchall()}

    return left


def test_prune_deletes_rows_older_than_the_retention_and_keeps_newer(
    prune: Callable[[int], int], log_rows: Callable[[], set[str]]
) -> None:
    assert prune(7) == 3
    assert log_rows() == {"an hour", "6 days", "7 days less an hour"}
    assert prune(7) == 0  # idempotent
    assert prune(1) == 2
    assert log_rows() == {"an hour"}


def test_zero_days_keeps_the_log_forever(
    prune: Callable[[int], int], log_rows: Callable[[], set[str]]
) -> None:
    assert prune(0) == 0
    assert log_rows() == set(AGES)


def test_beat_runs_the_prune_task_at_least_daily() -> None:
    app = create_celery(get_settings(), "redis://127.0.0.1:9/0")  # built, never connected
    try:
        entries = [e for e in app.conf.beat_schedule.values() if e["task"] == TASK_PRUNE_LOG]
        assert len(entries) == 1 and 0 < float(entries[0]["schedule"]) <= 24 * 3600
        assert "workers.tasks" in app.conf.include  # where the task is defined
        assert tasks.prune_request_log.name == TASK_PRUNE_LOG
    finally:
        app.close()
