"""End to end: a stack that has indexed an upload is backed up, restored into a fresh data dir, and
the restored stack answers the same question with the same sources, for the same token.

Both stacks are real `hearth up`s on their own data dirs, answering with the session stack's vLLM
(`llm_of`): what is backed up and restored is Hearth's data, and `hearth up` starting its own vLLM
is the session stack's business (two more vLLM start-ups here bought nothing)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .stack import Stack, llm_of, start_stack

pytestmark = pytest.mark.slow

MANUAL = b"""# Boiler manual

## Maintenance

The boiler's expansion vessel must be repressurised to 1.2 bar every spring.
Error code E-4471 means the condensate trap is blocked; clear it before restarting.
"""
QUESTION = "What does boiler error code E-4471 mean?"


def ask(stack: Stack, token: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chat sources and the search hits for QUESTION, without volatile fields."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.api + "/v1", headers=headers, timeout=300) as client:
        chat = client.post(
            "/chat/completions",
            json={
                "model": "hearth",
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 60,
                "temperature": 0,
            },
        )
        assert chat.status_code == 200, chat.text
        found = client.post("/search", json={"query": QUESTION, "k": 3})
        assert found.status_code == 200, found.text
    hits = found.json()["data"]
    return list(chat.json()["sources"]), list(hits)


def relative(items: list[dict[str, Any]], uploads: Path) -> list[dict[str, Any]]:
    prefix = str(uploads.resolve()) + "/"
    return [{**i, "path": i["path"].removeprefix(prefix)} for i in items]


def test_backup_restore_answers_with_the_same_sources(tmp_path: Path, stack: Stack) -> None:
    llm = llm_of(stack)
    source = start_stack(tmp_path / "a", tmp_path / "a.log", extra_env=llm)
    try:
        assert source.token
        token = source.token
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=source.api + "/v1", headers=headers, timeout=120) as client:
            r = client.post("/files", files={"file": ("boiler.md", MANUAL, "text/markdown")})
            assert r.status_code == 200, r.text
            file_id = r.json()["id"]
            deadline = time.monotonic() + 300
            while client.get(f"/files/{file_id}").json()["index_status"] != "indexed":
                assert time.monotonic() < deadline, client.get(f"/files/{file_id}").json()
                time.sleep(0.5)
        before = ask(source, token)
        backup = source.hearth("backup", str(tmp_path / "backup.tar"))
        assert backup.returncode == 0, backup.stderr
    finally:
        source.stop()

    restored_dir = tmp_path / "b"
    restore = source.hearth("restore", str(tmp_path / "backup.tar"))  # refused: A has data
    assert restore.returncode == 2 and "--force" in restore.stderr
    env = {**source.env, "HEARTH_DATA_DIR": str(restored_dir)}
    restore = subprocess.run(
        [sys.executable, "-m", "cli.main", "restore", str(tmp_path / "backup.tar")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr

    restored = start_stack(restored_dir, tmp_path / "b.log", extra_env=llm)
    try:
        assert restored.token is None  # users came with the backup: no new admin
        after = ask(restored, token)
    finally:
        restored.stop()

    sources_a, hits_a = before
    sources_b, hits_b = after
    assert sources_a and any(s["path"].endswith("boiler.md") for s in sources_a)
    assert relative(sources_b, restored_dir / "uploads") == relative(
        sources_a, tmp_path / "a" / "uploads"
    )
    assert relative(hits_b, restored_dir / "uploads") == relative(
        hits_a, tmp_path / "a" / "uploads"
    )
