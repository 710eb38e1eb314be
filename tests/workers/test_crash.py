"""kill -9 in the middle of a file loses nothing and duplicates nothing (real worker processes)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from core.settings import get_settings
from workers.celery_app import TASK_INGEST, create_celery

pytestmark = pytest.mark.slow


# a dead worker's task comes back after 5 s; small chunks make many of them
CRASH_ENV = {"TASK_VISIBILITY_TIMEOUT_S": "5", "CHUNK_SIZE": "64", "CHUNK_OVERLAP": "8"}


def big_file(tmp_path: Path) -> Path:
    """Enough text that embedding takes a few seconds on two cores."""
    f = tmp_path / "w" / "big.md"
    f.parent.mkdir(parents=True, exist_ok=True)
    paras = [
        f"## Part {i}\n\nParagraph {i} talks about topic {i * 7 % 13} at length, with "
        f"enough distinct words that every chunk differs from every other one, number {i}."
        for i in range(600)
    ]
    f.write_text("# Big document\n\n" + "\n\n".join(paras))
    return f


def status(db: psycopg.Connection, path: Path) -> str | None:
    row = db.execute("SELECT status FROM documents WHERE path = %s", (str(path),)).fetchone()
    db.commit()
    return row[0] if row else None


def wait_status(db: psycopg.Connection, path: Path, wanted: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while (s := status(db, path)) not in wanted:
        assert time.monotonic() < deadline, f"status {s!r}, wanted {wanted}"
        time.sleep(0.05)
    return s  # type: ignore[return-value]


def assert_indexed_exactly_once(db: psycopg.Connection, path: Path) -> None:
    rows = db.execute(
        "SELECT d.id, d.chunk_count, count(c.id), count(DISTINCT c.ordinal), min(c.ordinal),"
        " max(c.ordinal) FROM documents d LEFT JOIN chunks c ON c.document_id = d.id"
        " WHERE d.path = %s GROUP BY d.id",
        (str(path),),
    ).fetchall()
    assert len(rows) == 1
    _, chunk_count, n, distinct, lo, hi = rows[0]
    assert chunk_count == n == distinct > 50
    assert (lo, hi) == (0, n - 1)


def send(broker: str, path: Path) -> None:
    create_celery(get_settings(), broker).send_task(TASK_INGEST, args=[str(path)])


def pool_children(worker: subprocess.Popen[bytes], timeout_s: float = 60) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while not (kids := psutil.Process(worker.pid).children()):
        assert time.monotonic() < deadline, "the worker started no pool process"
        time.sleep(0.1)
    return kids


def test_killing_the_pool_process_mid_file_redelivers_it(
    db: psycopg.Connection,
    broker: str,
    start_worker,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    f = big_file(tmp_path)
    worker = start_worker(**CRASH_ENV)
    send(broker, f)
    wait_status(db, f, {"embedding"}, 120)
    for child in pool_children(worker):
        child.send_signal(signal.SIGKILL)
    wait_status(db, f, {"indexed"}, 180)
    assert_indexed_exactly_once(db, f)
    assert worker.poll() is None  # the worker itself carried on


def test_killing_the_whole_worker_mid_file_loses_nothing(
    db: psycopg.Connection,
    broker: str,
    start_worker,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    f = big_file(tmp_path)
    worker = start_worker(**CRASH_ENV)
    send(broker, f)
    wait_status(db, f, {"embedding"}, 120)
    kids = pool_children(worker)
    worker.send_signal(signal.SIGKILL)
    for child in kids:
        child.send_signal(signal.SIGKILL)
    worker.wait(10)
    assert status(db, f) == "embedding"  # it really died mid-file
    start_worker(**CRASH_ENV)  # a new worker gets the unacknowledged task back
    wait_status(db, f, {"indexed"}, 240)
    assert_indexed_exactly_once(db, f)
