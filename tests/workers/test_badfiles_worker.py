"""Every bad-file fixture, dropped next to good files and processed by a real worker process,
ends failed with its reason while the good files stay searchable."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from core.settings import get_settings
from tests.ingest.badfiles import write_bad_files
from tests.workers.conftest import WorkerFactory
from workers.celery_app import TASK_RESCAN, create_celery

pytestmark = pytest.mark.slow


def test_bad_files_fail_with_reasons_and_good_files_stay_searchable(
    db: psycopg.Connection, worker_env: dict[str, str], start_worker: WorkerFactory
) -> None:
    start_worker()
    watched = Path(worker_env["HEARTH_WATCH_DIR"])
    expected = {n: k for n, k in write_bad_files(watched).items() if not n.endswith(".sleep")}
    (watched / "slow.sleep").unlink(missing_ok=True)  # needs the test-only parser child
    (watched / "good.md").write_text("# Pantry\n\nThe flour is on the top shelf.\n")
    (watched / "good.txt").write_text("The spare fuses are in the red tin.")
    create_celery(get_settings(), worker_env["REDIS_URL"]).send_task(TASK_RESCAN)
    names = {*expected, "good.md", "good.txt"}
    deadline = time.monotonic() + 300
    while True:
        rows = {
            Path(p).name: (s, e)
            for p, s, e in db.execute("SELECT path, status, error FROM documents").fetchall()
        }
        db.commit()
        if names <= rows.keys() and all(rows[n][0] in ("indexed", "failed") for n in names):
            break
        assert time.monotonic() < deadline, {n: rows.get(n) for n in names}
        time.sleep(0.5)
    for name, keyword in expected.items():
        status, error = rows[name]
        if keyword is None:
            assert status == "indexed", (name, error)
        else:
            assert status == "failed" and keyword in (error or ""), (name, status, error)
    good = db.execute(
        "SELECT d.path FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE c.text LIKE '%flour%' OR c.text LIKE '%fuses%'"
    ).fetchall()
    assert {Path(p).name for (p,) in good} == {"good.md", "good.txt"}
