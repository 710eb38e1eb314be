"""Text files in any common encoding are read; binary content under a text name is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.formats.base import ParseError
from ingest.formats.text import read_text

TEXT = "Grüße aus Köln – ½ € ✓\n\nZweiter Absatz."


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]
)
def test_unicode_encodings(tmp_path: Path, encoding: str) -> None:
    """With or without a byte-order mark (legacy code pages: see test_parse)."""
    (tmp_path / "t.txt").write_bytes(TEXT.encode(encoding))
    assert read_text(tmp_path / "t.txt") == TEXT


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
        bytes(range(1, 32)) * 100,  # control characters, no NUL
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" * 50,
    ],
)
def test_binary_is_refused(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "b.txt").write_bytes(data)
    with pytest.raises(ParseError, match="not a text file"):
        read_text(tmp_path / "b.txt")
