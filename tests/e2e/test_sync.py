"""The watched folder is the truth: nested creates, edits, renames and bursts, through the real
watcher, queue and worker of a running `hearth up`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from workers.watcher import DELETE_GRACE_S

from .stack import Stack

pytestmark = pytest.mark.slow


def eventually(check: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.3)


def holds(check: Callable[[], bool], for_s: float) -> None:
    """`check` stays true for `for_s` seconds (polled): fails the moment it does not."""
    end = time.monotonic() + for_s
    while time.monotonic() < end:
        assert check(), "condition broke"
        time.sleep(0.3)


def doc(stack: Stack, path: Path) -> tuple[int, str, int] | None:
    rows = stack.query("SELECT id, status, chunk_count FROM documents WHERE path = %s", str(path))
    return rows[0] if rows else None


def chunk_ids(stack: Stack, path: Path) -> list[int]:
    return [
        r[0]
        for r in stack.query(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.path = %s"
            " ORDER BY c.ordinal",
            str(path),
        )
    ]


def test_nested_create_edit_rename_and_burst(stack: Stack) -> None:
    folder = stack.watch_dir / "projects" / "house"
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "roof.md"
    f.write_text("# Roof\n\nThe roof tiles are slate, laid in 1998.\n")
    eventually(lambda: (d := doc(stack, f)) is not None and d[1] == "indexed")
    first_chunks = chunk_ids(stack, f)

    # an editor saving five times in a row: the final text is what gets indexed
    for i in range(5):
        f.write_text(f"# Roof\n\nThe roof tiles are slate, relaid in {2020 + i}.\n")
        time.sleep(0.05)
    eventually(
        lambda: (
            "2024"
            in " ".join(
                r[0]
                for r in stack.query(
                    "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
                    " WHERE d.path = %s",
                    str(f),
                )
            )
        )
    )
    assert chunk_ids(stack, f) != first_chunks

    # a rename keeps the document and its chunks: nothing is re-embedded
    before = doc(stack, f)
    kept = chunk_ids(stack, f)
    renamed = folder / "roof-notes.md"
    f.rename(renamed)
    eventually(lambda: doc(stack, renamed) is not None)
    assert doc(stack, renamed) == before
    assert chunk_ids(stack, renamed) == kept
    # a delete of the old path, had the rename made one, would run within the grace a vanished
    # path gets plus the debounce: the document stays where it moved for all of that time
    holds(lambda: doc(stack, renamed) == before, DELETE_GRACE_S + 1.0)
    assert doc(stack, f) is None
    out = stack.hearth("search", "slate roof tiles relaid", "-k", "3")
    assert "roof-notes.md" in out.stdout and "roof.md\n" not in out.stdout
