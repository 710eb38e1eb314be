"""`hearth ingest --wait` against the real database: progress, then a table of failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_hearth


@pytest.mark.slow
def test_ingest_wait_indexes_and_tables_the_failures(
    pg_url: str, tmp_path: Path, env_without_hearth: dict[str, str]
) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.md").write_text("# Good\n\nThe boat is moored at pier 7.\n")
    (folder / "sub" / "also.txt").write_text("Oars are stored in the shed.")
    (folder / "broken.pdf").write_bytes(os.urandom(1000))
    env = {
        **env_without_hearth,
        "DATABASE_URL": pg_url,
        "HEARTH_DATA_DIR": str(tmp_path / "d"),
        "COLUMNS": "200",
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "ingest",
            str(folder),
            "--wait",
            "--collection",
            "boats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 1, out.stderr  # something failed, and the exit code says so
    assert "2 file(s) indexed or unchanged" in out.stdout
    assert "Failures" in out.stdout and "broken.pdf" in out.stdout and "PDF" in out.stdout
    search = subprocess.run(
        [sys.executable, "-m", "cli.main", "search", "where is the boat", "-k", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "good.md" in search.stdout


@pytest.mark.parametrize("args", [["ingest", "/no/such/path", "--wait"]])
def test_ingest_of_a_missing_path_is_a_clear_error(
    args: list[str], pg_url: str, env_without_hearth: dict[str, str]
) -> None:
    out = run_hearth({**env_without_hearth, "DATABASE_URL": pg_url}, *args, timeout_s=60)
    assert out.returncode == 2 and "does not exist" in out.stderr
