"""Serving a document's original file without following a symlink: an upload from the uploads
folder, a watched file from its watched folder, a file indexed with `hearth ingest` from its own
folder. The file is opened from there through no symlink (ingest.confine) and the response sends
that open file, so a path swapped for a symlink, before or while it is sent, serves nothing."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from core.settings import Settings
from ingest.confine import open_confined

_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


def folder_of(settings: Settings, path: Path, source: str) -> Path:
    """The folder a document's file must be inside, reached through no symlink."""
    if source == "upload":
        return settings.uploads_dir.resolve()
    for root in settings.watch_roots:
        for base in (root.path.resolve(), root.path):
            if path.is_relative_to(base) and path != base:
                return base
    return path.parent


def open_stored(settings: Settings, path: Path, source: str) -> int | None:
    """A descriptor of the document's regular file, or None when there is none to serve: gone,
    or reachable only through a symlink."""
    try:
        return open_confined(path, folder_of(settings, path, source))
    except OSError:
        return None


class OpenFileResponse(FileResponse):
    """A FileResponse (ranges, HEAD, length and validators) of a file already open: it is sent
    from that descriptor (through its /proc/self/fd name), which is closed once the response has
    been sent or dropped."""

    def __init__(self, fd: int, **kwargs: Any) -> None:
        super().__init__(f"{_FD_DIR}/{fd}", stat_result=os.fstat(fd), **kwargs)
        self._close = weakref.finalize(self, os.close, fd)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close()
