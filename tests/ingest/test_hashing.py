"""file_sha256 streams a file to the same digest as hashing it whole."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ingest.hashing import file_sha256


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 100_000])
def test_file_sha256_matches_whole_file_digest(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == expected
    assert file_sha256(path, chunk_bytes=4096) == expected
    assert file_sha256(str(path), chunk_bytes=7) == expected  # type: ignore[arg-type]


def test_file_sha256_known_value(tmp_path: Path) -> None:
    (tmp_path / "abc.txt").write_bytes(b"abc")
    assert file_sha256(tmp_path / "abc.txt") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "nope")
