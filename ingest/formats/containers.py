"""Checks on container formats (PDF, zip-based Office/ODF/EPUB) before a parser opens them.

`unstructured` often returns nothing for a broken file instead of failing, and it would inflate a
decompression bomb into memory, so these refuse such files first with a readable reason.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .base import ParseError, short_reason

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc/.xls/.ppt, .msg, encrypted OOXML

# a member every genuine file of each zip-based format has
ZIP_MEMBER = {
    ".docx": "word/document.xml",
    ".pptx": "ppt/presentation.xml",
    ".xlsx": "xl/workbook.xml",
    ".odt": "content.xml",
    ".epub": "META-INF/container.xml",
}

MAX_UNZIPPED_BYTES = 2**30
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 10 * 10**6  # a high ratio is only suspicious above this much output
MAX_MEMBERS = 10_000


def starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(magic)) == magic


def check_pdf(path: Path) -> None:
    """Refuse a file that is not a PDF, is corrupt, needs a password, or has no pages."""
    with path.open("rb") as fh:
        if b"%PDF-" not in fh.read(1024):
            raise ParseError("not a valid PDF (no %PDF header)")
    import pikepdf

    try:
        with pikepdf.open(path) as pdf:
            pages = len(pdf.pages)
    except pikepdf.PasswordError as exc:
        raise ParseError("encrypted PDF: needs a password") from exc
    except Exception as exc:
        raise ParseError(f"corrupt PDF: {short_reason(exc, path)}") from exc
    if pages == 0:
        raise ParseError("empty document: PDF has no pages")


def check_zip(path: Path, suffix: str) -> None:
    """Refuse a zip-based document that is not a zip, is a bomb, or lacks its format's core part."""
    label = suffix[1:].upper()
    if starts_with(path, OLE_MAGIC):
        raise ParseError(f"not a valid {label}: password-protected, or an old binary Office file")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"not a valid {label} (corrupt or not a zip)") from exc
    check_bomb(infos, path.stat().st_size)
    names = {info.filename for info in infos}
    if ZIP_MEMBER[suffix] not in names:
        raise ParseError(f"not a valid {label} (a zip without {ZIP_MEMBER[suffix]})")


def check_bomb(infos: list[zipfile.ZipInfo], archive_bytes: int) -> None:
    """Refuse an archive that would expand too far, by the sizes its directory declares.

    Python's zipfile (used by every OOXML/ODF reader here) never inflates a member past its declared
    size, so the declared sizes bound what parsing can allocate. The ratio is taken against the
    archive's size on disk, which overlapping members cannot inflate.
    """
    if len(infos) > MAX_MEMBERS:
        raise ParseError(
            f"refused: decompression bomb ({len(infos):,} files inside, "
            f"over the limit of {MAX_MEMBERS:,})"
        )
    total = sum(info.file_size for info in infos)
    if total > MAX_UNZIPPED_BYTES:
        raise ParseError(
            f"refused: decompression bomb (expands to {total / 2**30:.1f} GiB, "
            f"over the limit of {MAX_UNZIPPED_BYTES / 2**30:.0f} GiB)"
        )
    ratio = total / max(archive_bytes, 1)
    if total > RATIO_FLOOR_BYTES and ratio > MAX_RATIO:
        raise ParseError(
            f"refused: decompression bomb (expands {ratio:,.0f}:1 to {total / 10**6:,.0f} MB; "
            f"the limit is {MAX_RATIO}:1 above {RATIO_FLOOR_BYTES / 10**6:.0f} MB)"
        )
