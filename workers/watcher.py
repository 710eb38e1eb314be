"""The folder watcher: file events become tasks, debounced per path.

A burst of events for one path (an editor saving five times, a `cp -r`) settles into one task once
the path has been quiet for the debounce delay. Renames become move tasks, so a moved document
keeps its embeddings. Editing `.hearthignore` triggers a rescan.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from core.settings import WatchRoot
from ingest.sync import IGNORE_FILE, IgnoreRules

log = logging.getLogger(__name__)
DELETE_GRACE_S = 2.0


class Debouncer:
    """Runs the latest action for a key once the key has been quiet for `delay_s` seconds."""

    def __init__(self, delay_s: float) -> None:
        self._delay = delay_s
        self._due: dict[str, tuple[float, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="debouncer", daemon=True)
        self._thread.start()

    def touch(self, key: str, action: Callable[[], None], extra_delay_s: float = 0.0) -> None:
        with self._lock:
            self._due[key] = (time.monotonic() + self._delay + extra_delay_s, action)

    def cancel(self, key: str) -> None:
        with self._lock:
            self._due.pop(key, None)

    def _run(self) -> None:
        while not self._stop.wait(min(0.1, self._delay or 0.1)):
            self.flush(only_due=True)

    def flush(self, only_due: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            ready = [k for k, (t, _) in self._due.items() if not only_due or t <= now]
            actions = [self._due.pop(k)[1] for k in ready]
        for action in actions:
            try:
                action()
            except Exception:  # a broker hiccup must not kill the watcher; rescans heal gaps
                log.exception("could not queue a task")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()


@dataclass
class Callbacks:
    sync: Callable[[str, str], None]  # (path, collection)
    move: Callable[[str, str, str], None]  # (src, dest, collection of dest)
    rescan: Callable[[], None]


class _Handler(FileSystemEventHandler):
    def __init__(self, roots: Sequence[WatchRoot], debouncer: Debouncer, cb: Callbacks) -> None:
        self.roots = list(roots)
        self.rules = {r.path: IgnoreRules(r.path) for r in self.roots}
        self.debouncer = debouncer
        self.cb = cb

    def _locate(self, raw: str | bytes) -> tuple[WatchRoot, Path] | None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        for root in self.roots:
            if path.is_relative_to(root.path):
                return root, path.relative_to(root.path)
        return None

    def _wanted(self, raw: str | bytes) -> tuple[WatchRoot, str] | None:
        found = self._locate(raw)
        if found is None:
            return None
        root, rel = found
        if rel.as_posix() == IGNORE_FILE:
            self.rules[root.path] = IgnoreRules(root.path)
            self.debouncer.touch("rescan", self.cb.rescan)
            return None
        if self.rules[root.path].ignored(rel):
            return None
        return root, str(root.path / rel)

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:  # one odd event (unreadable .hearthignore...) must not stop watching
            log.exception("could not handle %s", event)

    def _handle(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        if event.event_type == "moved":
            src, dest = self._wanted(event.src_path), self._wanted(event.dest_path)
            if src and dest:
                self.debouncer.cancel(src[1])
                self.debouncer.touch(
                    dest[1], lambda: self.cb.move(src[1], dest[1], dest[0].collection)
                )
                return
            for side in (src, dest):  # into or out of the tree, or to/from an ignored name
                if side:
                    self._sync(*side)
            return
        found = self._wanted(event.src_path)
        if found:
            self._sync(*found)

    def _sync(self, root: WatchRoot, path: str) -> None:
        # a vanished path waits a little longer, so a move watchdog reports as delete + create
        # (across watched roots) lets the new path claim the document and its embeddings first
        delay = 0.0 if Path(path).exists() else DELETE_GRACE_S
        self.debouncer.touch(path, lambda: self.cb.sync(path, root.collection), delay)


def watch(
    roots: Sequence[WatchRoot], cb: Callbacks, debounce_s: float, stop: threading.Event
) -> None:
    """Watch every root recursively until `stop` is set, queueing each settled change once."""
    resolved = [WatchRoot(r.path.resolve(), r.collection) for r in roots]
    for r in resolved:
        r.path.mkdir(parents=True, exist_ok=True)
    debouncer = Debouncer(debounce_s)
    handler = _Handler(resolved, debouncer, cb)
    observer = Observer()
    for r in resolved:
        observer.schedule(handler, str(r.path), recursive=True)
        log.info("watching %s (collection %s)", r.path, r.collection)
    observer.start()
    try:
        while not stop.wait(0.5):
            if not observer.is_alive():
                raise RuntimeError("the file observer stopped unexpectedly")
    finally:
        observer.stop()
        observer.join(timeout=5)
        debouncer.close()
