from __future__ import annotations

import threading
import time
from pathlib import Path

from workers.watcher import Debouncer, watch


def test_debouncer_coalesces_a_burst_into_one_call_per_path() -> None:
    fired: list[str] = []
    d = Debouncer(fired.append, delay_s=0.2)
    for _ in range(5):
        d.touch("/a")
        d.touch("/b")
        time.sleep(0.02)
    time.sleep(0.5)
    d.close()
    assert sorted(fired) == ["/a", "/b"]


def test_debouncer_flushes_pending_paths_on_close() -> None:
    fired: list[str] = []
    d = Debouncer(fired.append, delay_s=60)
    d.touch("/late")
    d.close()
    assert fired == ["/late"]


def test_watch_reports_create_modify_delete_and_skips_ignored(tmp_path: Path) -> None:
    seen: list[str] = []
    stop = threading.Event()
    t = threading.Thread(target=watch, args=(tmp_path, seen.append, 0.1, stop), daemon=True)
    t.start()
    time.sleep(0.5)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "note.md").write_text("hello")
    (tmp_path / ".hidden.md").write_text("secret")
    (tmp_path / "draft.md.swp").write_text("swap")
    (tmp_path / "~$report.docx").write_text("lock")
    deadline = time.monotonic() + 5
    while str(tmp_path / "sub" / "note.md") not in seen and time.monotonic() < deadline:
        time.sleep(0.1)
    (tmp_path / "sub" / "note.md").unlink()
    time.sleep(0.6)
    stop.set()
    t.join(5)
    assert str(tmp_path / "sub" / "note.md") in seen
    assert seen.count(str(tmp_path / "sub" / "note.md")) == 2  # created, then deleted
    assert not [p for p in seen if "hidden" in p or "swp" in p or "~$" in p]
