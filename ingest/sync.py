"""Reconciling a watched folder with the index: what changed, what vanished."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from retrieval import index

TEMP_SUFFIXES = (".swp", ".swx", ".tmp", ".part", ".crdownload", ".lock", "~")


def is_ignored(path: Path) -> bool:
    """Hidden files and folders, editor swap files, partial downloads and Office lock files.

    `path` is relative to the watched root.
    """
    name = path.name
    return (
        any(part.startswith(".") and part not in (".", "..") for part in path.parts)
        or name.startswith("~$")
        or name.endswith(TEMP_SUFFIXES)
    )


def walk(root: Path) -> Iterator[Path]:
    """Every file under root that is not ignored; symlinked folders are not followed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not is_ignored(p.relative_to(root)) and p.is_file():
                yield p


@dataclass
class Plan:
    to_ingest: list[Path] = field(default_factory=list)
    to_delete: list[str] = field(default_factory=list)
    unchanged: int = 0


def reconcile(conn: psycopg.Connection, root: Path) -> Plan:
    """Files that are new or whose size/mtime changed, and indexed paths that are gone."""
    root = root.resolve()
    known = {d.path: d for d in index.documents_under(conn, str(root))}
    plan = Plan()
    for p in walk(root):
        key = str(p.resolve())
        doc = known.pop(key, None)
        st = p.stat()
        if (
            doc
            and doc.size == st.st_size
            and doc.mtime == st.st_mtime
            and doc.status in ("indexed", "failed", "needs_ocr")
        ):
            plan.unchanged += 1
        else:
            plan.to_ingest.append(p)
    plan.to_delete = sorted(known)
    return plan
