"""Zip-based documents are checked before parsing: bombs refused by their declared sizes, legacy
binary Office files refused with what to do instead."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ingest.formats.containers import OLE_MAGIC, check_bomb
from ingest.parse import ParseError, parse_file

from ..test_parse import make_docx


def infos(*sizes: int) -> list[zipfile.ZipInfo]:
    out = []
    for n, size in enumerate(sizes):
        info = zipfile.ZipInfo(f"m{n}")
        info.file_size = size
        out.append(info)
    return out


@pytest.mark.parametrize(
    ("sizes", "archive", "reason"),
    [
        ((0,) * 10_001, 10**6, "10,001 files inside, over the limit of 10,000"),
        ((2**30, 1), 2**30, "expands to 1.0 GiB, over the limit of 1 GiB"),
        ((20 * 10**6,), 100_000, "expands 200:1 to 20 MB; the limit is 100:1 above 10 MB"),
    ],
)
def test_bombs_are_refused(sizes: tuple[int, ...], archive: int, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        check_bomb(infos(*sizes), archive)
    assert str(info.value) == f"refused: decompression bomb ({reason})"


@pytest.mark.parametrize(
    ("sizes", "archive"),
    [
        ((0,) * 10_000, 10**6),  # many members, but not too many
        ((2**30,), 2**30 // 50),  # exactly the size limit, at 50:1
        ((9 * 10**6,), 1000),  # a huge ratio, but little output
        ((20 * 10**6,), 200_000),  # exactly 100:1
    ],
)
def test_ordinary_archives_pass(sizes: tuple[int, ...], archive: int) -> None:
    check_bomb(infos(*sizes), archive)


def test_password_protected_office_file_keeps_its_reason(tmp_path: Path) -> None:
    (tmp_path / "locked.xlsx").write_bytes(OLE_MAGIC + bytes(1024))
    with pytest.raises(ParseError, match=r"^not a valid XLSX: password-protected"):
        parse_file(tmp_path / "locked.xlsx")


@pytest.mark.parametrize(
    ("suffix", "modern"), [(".doc", ".docx"), (".ppt", ".pptx"), (".xls", ".xlsx")]
)
def test_legacy_binary_office_files_are_refused(tmp_path: Path, suffix: str, modern: str) -> None:
    path = tmp_path / f"old{suffix}"
    path.write_bytes(OLE_MAGIC + bytes(1024))
    with pytest.raises(ParseError) as info:
        parse_file(path)
    assert str(info.value) == f"legacy {suffix} format is not supported; save it as {modern}"


def test_legacy_names_on_modern_content_are_read(tmp_path: Path) -> None:
    renamed = tmp_path / "renamed.doc"
    renamed.write_bytes(make_docx(tmp_path / "guide.docx").read_bytes())
    assert parse_file(renamed).title == "Guide"
    (tmp_path / "word-rtf.doc").write_text(r"{\rtf1\ansi Saved as RTF by Word.\par}")
    assert [e.text for e in parse_file(tmp_path / "word-rtf.doc").elements] == [
        "Saved as RTF by Word."
    ]
    (tmp_path / "junk.xls").write_text("name,qty\n")
    with pytest.raises(ParseError, match=r"^not a valid XLS \(not a binary Office file\)$"):
        parse_file(tmp_path / "junk.xls")


def test_tsv_becomes_a_table(tmp_path: Path) -> None:
    (tmp_path / "stock.tsv").write_text("name\tqty\napple\t3\npear\t4\n")
    parsed = parse_file(tmp_path / "stock.tsv")
    assert parsed.mime == "text/tab-separated-values"
    assert [(e.text, e.kind) for e in parsed.elements] == [
        ("name | qty\napple | 3\npear | 4", "table")
    ]
