"""Every bad-file fixture, dropped next to good files and processed by a real worker process,
ends failed with its reason while the good files stay searchable."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.cli.embedded import EmbeddedRedis
from core.settings import get_settings
from tests.ingest.badfiles import write_bad_files
from workers.celery_app import TASK_RESCAN, create_celery

pytestmark = pytest.mark.slow


@pytest.fixture
def worker_env(
    pg_url: str, tmp_path: Path, env_without_hearth: dict[str, str]
) -> Iterator[dict[str, str]]:
    redis = EmbeddedRedis(tmp_path / "redis")
    env = {
        **env_without_hearth,
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis.start(),
        "HEARTH_DATA_DIR": str(tmp_path / "data"),
        "HEARTH_WATCH_DIR": str(tmp_path / "w"),
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
    proc.wait(30)
    log.close()
    redis.stop()


def test_bad_files_fail_with_reasons_and_good_files_stay_searchable(
    db: psycopg.Connection, worker_env: dict[str, str]
) -> None:
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
