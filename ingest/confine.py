"""Opening a file inside a folder without following a symlink, so that a writer of a watched folder
cannot make Hearth read (and index, and serve) a file outside it.

`open_confined` walks from the folder to the file one component at a time with O_NOFOLLOW, so no
symlink is followed anywhere below the folder, and returns the descriptor of what it opened: the
caller reads that, never the path again. Swapping the file (or a folder on its way) for a symlink
after a scan and before the open, or after the open, changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO (or a device) under a file's name must not hang the reader
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_BLOCK = 1 << 20


class SymlinkRefused(OSError):
    """A symlink stands at `link` (the file itself, or a folder on its way): it is not followed.

    `outside` says whether it points out of the folder (or nowhere, or into a loop); a symlink to a
    place inside the folder reaches a file that is read under its own name instead.
    """

    def __init__(self, link: Path, root: Path, *, final: bool) -> None:
        super().__init__(f"{link} is a symlink; symlinks are not followed")
        self.link, self.final = link, final
        self.outside = not points_inside(link, root)
        self.to_folder = os.path.isdir(link)


class NotRegular(OSError):
    """Something other than a regular file (a folder, a FIFO, a device) has the file's name."""


def points_inside(link: Path, root: Path) -> bool:
    """Whether the symlink `link` resolves to a place inside `root` (for reporting only: nothing
    is ever opened through a symlink)."""
    target = Path(os.path.realpath(link))
    base = Path(os.path.realpath(root))
    return target.is_relative_to(base)


def open_confined(path: Path, root: Path) -> int:
    """A read-only descriptor of the regular file `path`, reached from `root` through no symlink.

    `path` must be absolute and lexically inside `root` (`root` itself may be reached through
    symlinks: it is the trusted starting point). Raises FileNotFoundError (nothing there, or not
    inside `root`), SymlinkRefused, or NotRegular.
    """
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if not path.is_relative_to(root) or path == root:
        raise FileNotFoundError(f"{path} is not inside {root}")
    parts = path.relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        here = root
        for part in parts[:-1]:
            here = here / part
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                _explain(part, fd, here, root, final=False)
                raise
            os.close(fd)
            fd = nxt
        try:
            out = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except OSError:
            _explain(parts[-1], fd, path, root, final=True)
            raise
    finally:
        os.close(fd)
    st = os.fstat(out)
    if not stat.S_ISREG(st.st_mode):
        os.close(out)
        raise NotRegular(f"{path} is not a regular file")
    os.set_blocking(out, True)
    return out


def _explain(name: str, dir_fd: int, path: Path, root: Path, *, final: bool) -> None:
    """Raise a clearer error than the one os.open gave, when there is one to give."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise SymlinkRefused(path, root, final=final)
    if not final and not stat.S_ISDIR(st.st_mode):
        raise FileNotFoundError(f"{path} is not a folder")


@contextlib.contextmanager
def opened(path: Path, root: Path) -> Iterator[int]:
    """`open_confined` as a context manager that closes the descriptor."""
    fd = open_confined(path, root)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_copy(fd: int, name: str, scratch: Path | None = None) -> Iterator[tuple[Path, str]]:
    """Copy the open file into a private (0700) temporary folder under the same `name`, hashing it
    on the way: yields (the copy, its SHA-256). Parsers, which need a path, read the copy; memory
    stays flat whatever the size. `scratch` is where the temporary folder goes (default: the
    system's)."""
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hearth-ingest-", dir=scratch) as tmp:
        dest = Path(tmp) / name
        digest = hashlib.sha256()
        offset = 0
        with dest.open("xb") as out:
            while block := os.pread(fd, _BLOCK, offset):
                digest.update(block)
                out.write(block)
                offset += len(block)
        yield dest, digest.hexdigest()


def fd_sha256(fd: int) -> str:
    """Hex SHA-256 of an open file's content (read with pread: the offset is left alone)."""
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, _BLOCK, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def read_small(path: Path, limit: int) -> bytes | None:
    """The first `limit` bytes of a regular file at `path` that is not a symlink; None when there
    is none (or it is something else)."""
    try:
        fd = os.open(path, _FILE_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.pread(fd, limit, 0)
    finally:
        os.close(fd)
