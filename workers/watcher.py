"""The folder watcher: file events become `ingest_file` tasks, debounced per path."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ingest.sync import is_ignored

log = logging.getLogger(__name__)


class Debouncer:
    """Calls `fire(path)` once per path after it has been quiet for `delay_s` seconds."""

    def __init__(self, fire: Callable[[str], None], delay_s: float) -> None:
        self._fire = fire
        self._delay = delay_s
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="debouncer", daemon=True)
        self._thread.start()

    def touch(self, path: str) -> None:
        with self._lock:
            self._due[path] = time.monotonic() + self._delay

    def _run(self) -> None:
        while not self._stop.wait(min(0.1, self._delay or 0.1)):
            self.flush(only_due=True)

    def flush(self, only_due: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            ready = [p for p, t in self._due.items() if not only_due or t <= now]
            for p in ready:
                del self._due[p]
        for p in ready:
            try:
                self._fire(p)
            except Exception:  # a broker hiccup must not kill the watcher; rescan heals gaps
                log.exception("could not queue %s", p)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, debouncer: Debouncer) -> None:
        self.root = root
        self.debouncer = debouncer

    def _note(self, raw: str | bytes) -> None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return
        if not is_ignored(rel):
            self.debouncer.touch(str(path))

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        self._note(event.src_path)
        if event.event_type == "moved":
            self._note(event.dest_path)


def watch(
    root: Path, enqueue: Callable[[str], None], debounce_s: float, stop: threading.Event
) -> None:
    """Watch `root` recursively until `stop` is set, queueing each settled change once."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    debouncer = Debouncer(enqueue, debounce_s)
    observer = Observer()
    observer.schedule(_Handler(root, debouncer), str(root), recursive=True)
    observer.start()
    log.info("watching %s", root)
    try:
        while not stop.wait(0.5):
            if not observer.is_alive():
                raise RuntimeError("the file observer stopped unexpectedly")
    finally:
        observer.stop()
        observer.join(timeout=5)
        debouncer.close()
