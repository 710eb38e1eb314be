from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import WatchRoot
from workers import watcher
from workers.watcher import Callbacks, Debouncer, watch


def test_debouncer_coalesces_a_burst_into_one_call_per_key() -> None:
    fired: list[str] = []
    d = Debouncer(delay_s=0.2)
    for i in range(5):
        d.touch("/a", lambda i=i: fired.append(f"a{i}"))
        d.touch("/b", lambda: fired.append("b"))
        time.sleep(0.02)
    time.sleep(0.5)
    d.close()
    assert sorted(fired) == ["a4", "b"]  # the latest action, once


def test_debouncer_flushes_pending_work_on_close_and_cancel_drops_it() -> None:
    fired: list[str] = []
    d = Debouncer(delay_s=60)
    d.touch("/late", lambda: fired.append("late"))
    d.touch("/gone", lambda: fired.append("gone"))
    d.cancel("/gone")
    d.close()
    assert fired == ["late"]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.cb = Callbacks(
            sync=lambda p, c: self.events.append(("sync", p, c)),
            move=lambda s, d, c: self.events.append(("move", s, d, c)),
            rescan=lambda: self.events.append(("rescan",)),
        )

    def wait_for(self, event: tuple[str, ...], timeout_s: float = 5) -> None:
        deadline = time.monotonic() + timeout_s
        while event not in self.events:
            assert time.monotonic() < deadline, f"{event} not in {self.events}"
            time.sleep(0.05)


@pytest.fixture
def watching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Recorder, Path, Path]]:
    # a deleted path's grace, shorter than its 2 s and still five debounce periods long
    monkeypatch.setattr(watcher, "DELETE_GRACE_S", 0.5)
    a, b = tmp_path / "a", tmp_path / "b"
    rec, stop = Recorder(), threading.Event()
    roots = [WatchRoot(a, "default"), WatchRoot(b, "family")]
    t = threading.Thread(target=watch, args=(roots, rec.cb, 0.1, stop), daemon=True)
    t.start()
    time.sleep(0.5)
    yield rec, a, b
    stop.set()
    t.join(5)


def test_create_modify_delete_in_nested_folders_of_each_root(watching) -> None:  # type: ignore[no-untyped-def]
    rec, a, b = watching
    (a / "sub").mkdir()
    note = a / "sub" / "note.md"
    note.write_text("hello")
    rec.wait_for(("sync", str(note), "default"))
    (b / "x.txt").write_text("family things")
    rec.wait_for(("sync", str(b / "x.txt"), "family"))
    rec.events.clear()
    note.unlink()
    rec.wait_for(("sync", str(note), "default"))


def test_a_burst_of_writes_is_one_sync(watching) -> None:  # type: ignore[no-untyped-def]
    rec, a, _ = watching
    f = a / "draft.md"
    for i in range(5):
        f.write_text(f"version {i}")
        time.sleep(0.01)
    rec.wait_for(("sync", str(f), "default"))
    time.sleep(0.4)
    assert rec.events.count(("sync", str(f), "default")) == 1


def test_rename_is_a_move_and_editor_temp_files_are_ignored(watching) -> None:  # type: ignore[no-untyped-def]
    rec, a, b = watching
    old = a / "old.md"
    old.write_text("content")
    rec.wait_for(("sync", str(old), "default"))
    rec.events.clear()
    old.rename(a / "new.md")
    rec.wait_for(("move", str(old), str(a / "new.md"), "default"))
    rec.events.clear()
    # across roots the OS reports a delete and a create: the create is queued first
    (a / "new.md").rename(b / "moved.md")
    rec.wait_for(("sync", str(a / "new.md"), "default"), timeout_s=8)
    syncs = [e[1] for e in rec.events if e[0] == "sync"]
    assert syncs == [str(b / "moved.md"), str(a / "new.md")]
    rec.events.clear()
    # an editor writes a swap file, then renames it over the real one: one sync of the real file
    swap = a / "doc.md.swp"
    swap.write_text("new text")
    swap.rename(a / "doc.md")
    rec.wait_for(("sync", str(a / "doc.md"), "default"))
    (a / ".hidden.md").write_text("secret")
    (a / "~$report.docx").write_text("lock")
    time.sleep(0.4)
    assert all("hidden" not in e[-2] and "~$" not in e[-2] for e in rec.events if len(e) > 1)


def test_hearthignore_is_honoured_and_editing_it_rescans(watching) -> None:  # type: ignore[no-untyped-def]
    rec, a, _ = watching
    (a / ".hearthignore").write_text("*.log\nprivate/\n")
    rec.wait_for(("rescan",))
    (a / "private").mkdir()
    (a / "private" / "diary.md").write_text("dear diary")
    (a / "debug.log").write_text("noise")
    (a / "keep.md").write_text("kept")
    rec.wait_for(("sync", str(a / "keep.md"), "default"))
    time.sleep(0.3)
    synced = {e[1] for e in rec.events if e[0] == "sync"}
    assert synced == {str(a / "keep.md")}
