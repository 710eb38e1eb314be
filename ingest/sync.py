"""Reconciling watched folders with the index: what is new or changed, what moved, what vanished.

Paths are keyed as absolute paths under the resolved watched root. Symlinks are never followed
(ingest.confine): one that points out of its root is listed, so the worker records it as skipped
with the reason; one that points inside adds nothing, since what it points to is walked under its
own name (once: no double indexing, no loops); symlinked folders are not descended.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pathspec
import psycopg

from core.settings import WatchRoot
from retrieval import documents

from .confine import fd_sha256, opened, points_inside, read_small

IGNORE_FILE = ".hearthignore"
IGNORE_FILE_MAX_BYTES = 1 << 20
TEMP_SUFFIXES = (".swp", ".swx", ".tmp", ".part", ".crdownload", ".lock", "~")
SETTLED = ("indexed", "failed", "needs_ocr")


def builtin_ignored(rel: Path, is_dir: bool = False) -> bool:
    """Hidden files and folders, editor swap files, partial downloads, Office lock files."""
    if any(p.startswith(".") and p not in (".", "..") for p in rel.parts):
        return True
    return not is_dir and (rel.name.startswith("~$") or rel.name.endswith(TEMP_SUFFIXES))


class IgnoreRules:
    """The built-in rules plus the root's `.hearthignore` (gitignore syntax)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # read without following a symlink, and only so much: it is a list of patterns
        data = read_small(root / IGNORE_FILE, IGNORE_FILE_MAX_BYTES) or b""
        lines = data.decode(errors="replace").splitlines()
        self.spec = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, rel: Path, is_dir: bool = False) -> bool:
        """`rel` is relative to the root."""
        if builtin_ignored(rel, is_dir):
            return True
        return self.spec.match_file(rel.as_posix() + ("/" if is_dir else ""))


def walk(root: Path, rules: IgnoreRules | None = None) -> Iterator[Path]:
    """Every regular file under root that is not ignored, in a stable order, and every symlink
    that points out of root (to a file or a folder, or nowhere): the worker records those as
    skipped. Symlinks to places inside root are left out; symlinked folders are not descended."""
    rules = rules or IgnoreRules(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        folders = []
        for d in sorted(dirnames):  # os.walk lists a symlink to a folder as a folder
            if rules.ignored(rel_dir / d, is_dir=True):
                continue
            if (here / d).is_symlink():
                if not points_inside(here / d, root):
                    yield here / d
                continue
            folders.append(d)
        dirnames[:] = folders
        for name in sorted(filenames):
            p = here / name
            if rules.ignored(rel_dir / name):
                continue
            try:
                mode = p.lstat().st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) or (stat.S_ISLNK(mode) and not points_inside(p, root)):
                yield p


def root_for(path: Path, roots: Sequence[WatchRoot]) -> WatchRoot | None:
    """The watched root that contains `path`, if any."""
    for root in roots:
        if path == root.path or path.is_relative_to(root.path):
            return root
    return None


@dataclass
class Plan:
    to_ingest: list[tuple[Path, str]] = field(default_factory=list)  # (path, collection)
    to_delete: list[str] = field(default_factory=list)
    moves: list[tuple[str, Path, str]] = field(default_factory=list)  # (old, new, collection)
    unchanged: int = 0


def reconcile(conn: psycopg.Connection, roots: Sequence[WatchRoot]) -> Plan:
    """Compare the folders with the index by size and mtime only (no file is read unless it is
    new and may be a moved one), so a rescan of an unchanged tree costs one stat per file."""
    plan = Plan()
    vanished: dict[str, documents.DocumentRow] = {}
    new: list[tuple[Path, str, Path]] = []  # (path, collection, root)
    for root in roots:
        base = root.path.resolve()
        base.mkdir(parents=True, exist_ok=True)
        known = {d.path: d for d in documents.under(conn, str(base))}
        for p in walk(base):
            doc = known.pop(str(p), None)
            try:
                st = p.lstat()  # a symlink's own: it is never followed
            except OSError:
                continue
            if doc is None:
                if stat.S_ISLNK(st.st_mode):
                    plan.to_ingest.append((p, root.collection))  # to be recorded as skipped
                else:
                    new.append((p, root.collection, base))
            elif (
                doc.size == st.st_size
                and doc.mtime == st.st_mtime
                and doc.status in SETTLED
                and doc.collection == root.collection
            ):
                plan.unchanged += 1
            else:
                plan.to_ingest.append((p, root.collection))
        vanished.update(known)
    # a new file with the size and content of a vanished document is that document, moved
    by_size: dict[int, list[documents.DocumentRow]] = {}
    for doc in vanished.values():
        if doc.status == "indexed" and doc.size is not None:
            by_size.setdefault(doc.size, []).append(doc)
    for p, collection, base in new:
        try:
            candidates = by_size.get(p.lstat().st_size)
        except OSError:
            continue
        if candidates:
            try:  # through no symlink, even one swapped in since the walk
                with opened(p, base) as fd:
                    digest = fd_sha256(fd)
            except OSError:
                digest = ""
            match = next((d for d in candidates if d.content_hash == digest), None)
            if match:
                candidates.remove(match)
                del vanished[match.path]
                plan.moves.append((match.path, p, collection))
                continue
        plan.to_ingest.append((p, collection))
    plan.to_delete = sorted(vanished)
    return plan
