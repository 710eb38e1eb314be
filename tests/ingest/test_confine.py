"""open_confined: a file is reached from its folder through no symlink, whatever stands where."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from ingest.confine import (
    NotRegular,
    SymlinkRefused,
    open_confined,
    opened,
    points_inside,
    private_copy,
    read_small,
)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): a folder with a file in a subfolder, and a secret beside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.txt").write_text("inside")
    (outside / "secret.txt").write_text("secret")
    return root, outside


def read(fd: int) -> str:
    return os.pread(fd, 100, 0).decode()


def test_a_regular_file_opens_and_is_read_from_its_descriptor(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with opened(root / "sub" / "a.txt", root) as fd:
        (root / "sub" / "a.txt").unlink()  # gone by name: the open file is what is read
        assert read(fd) == "inside"


@pytest.mark.parametrize(
    ("target", "outside"),
    [("secret", True), ("sibling", False), ("root", False), ("nothing", True), ("self", False)],
)
def test_a_symlink_as_the_file_is_refused_and_says_where_it_points(
    tree: tuple[Path, Path], target: str, outside: bool
) -> None:
    root, out = tree
    link = root / "sub" / "link.txt"
    os.symlink(
        {
            "secret": out / "secret.txt",
            "sibling": root / "sub" / "a.txt",
            "root": root,
            "nothing": out / "missing.txt",
            "self": link,
        }[target],
        link,
    )
    with pytest.raises(SymlinkRefused) as caught:
        open_confined(link, root)
    assert caught.value.final and caught.value.outside is outside
    assert points_inside(link, root) is not outside


def test_a_symlinked_folder_on_the_way_is_refused(tree: tuple[Path, Path]) -> None:
    root, out = tree
    os.symlink(out, root / "linked", target_is_directory=True)
    with pytest.raises(SymlinkRefused) as caught:
        open_confined(root / "linked" / "secret.txt", root)
    assert not caught.value.final and caught.value.outside and caught.value.to_folder
    assert caught.value.link == root / "linked"


def test_missing_outside_and_odd_files(tree: tuple[Path, Path]) -> None:
    root, out = tree
    with pytest.raises(FileNotFoundError):
        open_confined(root / "sub" / "nope.txt", root)
    with pytest.raises(FileNotFoundError):
        open_confined(root / "nope" / "a.txt", root)
    with pytest.raises(FileNotFoundError):  # lexically outside: never opened
        open_confined(out / "secret.txt", root)
    with pytest.raises(FileNotFoundError):
        open_confined(root / "sub" / ".." / ".." / "outside" / "secret.txt", root)
    with pytest.raises(FileNotFoundError):  # a file where a folder should be
        open_confined(root / "sub" / "a.txt" / "x", root)
    with pytest.raises(NotRegular):
        open_confined(root / "sub", root)
    fifo = root / "sub" / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(NotRegular):  # no writer: a blocking open would hang here
        open_confined(fifo, root)


def test_the_root_itself_may_be_reached_through_a_symlink(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    alias = root.parent / "alias"
    os.symlink(root, alias, target_is_directory=True)
    with opened(alias / "sub" / "a.txt", alias) as fd:
        assert read(fd) == "inside"


def test_private_copy_keeps_the_name_hashes_and_goes_away(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    f = root / "sub" / "big.md"
    data = os.urandom(3 * 2**20 + 17)
    f.write_bytes(data)
    scratch = root.parent / "scratch"
    with opened(f, root) as fd, private_copy(fd, f.name, scratch) as (copy, digest):
        f.write_bytes(b"changed after the open")  # the copy is of what was opened
        assert copy.name == "big.md" and copy.read_bytes() == data
        assert digest == hashlib.sha256(data).hexdigest()
        assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
        assert copy.parent.parent == scratch
    assert not copy.exists() and list(scratch.iterdir()) == []


def test_read_small_refuses_symlinks_and_caps(tree: tuple[Path, Path]) -> None:
    root, out = tree
    assert read_small(root / "sub" / "a.txt", 3) == b"ins"
    os.symlink(out / "secret.txt", root / "rules")
    assert read_small(root / "rules", 100) is None
    assert read_small(root / "none", 100) is None
    assert read_small(root / "sub", 100) is None
