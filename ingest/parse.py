"""Turn a file into Hearth's elements (titles, text, lists, tables) with `unstructured`, offline.

Files are checked before `unstructured` sees them, because on a bad file it often returns nothing
instead of failing; every failure leaves as a `ParseError` with a short, readable reason. To keep a
file that hangs or exhausts memory from taking the caller down, parse through
`ingest.isolate.ParserProcess`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from core.offline import go_offline

from .formats.base import Attachment, Element, Parsed, ParseError, short_reason
from .formats.containers import OLE_MAGIC, ZIP_MEMBER, check_pdf, check_zip
from .formats.convert import convert
from .formats.lean import NO_LANGUAGE, skip_narrative_checks
from .formats.text import paragraphs, read_text

__all__ = ["SUPPORTED_SUFFIXES", "Attachment", "Element", "ParseError", "Parsed", "parse_file"]

_MIME = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".xml": "application/xml",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".rtf": "application/rtf",
    ".epub": "application/epub+zip",
    ".eml": "message/rfc822",
    ".msg": "application/vnd.ms-outlook",
}
SUPPORTED_SUFFIXES = frozenset(_MIME)

# pictures hold text only as pixels: without OCR they are reported as needing it, not as failures
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".heic"}
)
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF8", b"RIFF")

# binary Office formats need LibreOffice to convert, which Hearth does not ship
_LEGACY = {".doc": ".docx", ".ppt": ".pptx", ".xls": ".xlsx"}
_TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".text", ".html", ".htm", ".csv", ".tsv"})


def parse_file(path: Path) -> Parsed:
    """Parse one file into elements; raises ParseError (only) when it cannot.

    MemoryError is let through, so that whoever set the memory limit can tell it apart.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _image(path, suffix)
    if suffix not in SUPPORTED_SUFFIXES and suffix not in _LEGACY:
        raise ParseError(f"unsupported file type: {suffix or '(no extension)'}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise ParseError("empty file")
    label = suffix[1:].upper()
    go_offline()  # before any third-party import below: no analytics ping, no notice
    try:
        if suffix in _LEGACY:
            suffix = _sniff_legacy(path, suffix)
        return _parse(path, suffix)
    except (ParseError, MemoryError):
        raise
    except RecursionError as exc:
        raise ParseError(f"could not parse {label}: nested too deeply") from exc
    except Exception as exc:
        raise ParseError(f"could not parse {label}: {short_reason(exc)}") from exc


def _image(path: Path, suffix: str) -> Parsed:
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head:
        raise ParseError("empty file")
    if not head.startswith(_IMAGE_MAGIC) and b"ftyp" not in head:
        raise ParseError(f"not a valid {suffix[1:].upper()} image")
    return Parsed(title=path.stem, mime=f"image/{suffix[1:]}", elements=[], needs_ocr=True)


def _sniff_legacy(path: Path, suffix: str) -> str:
    """A .doc/.xls/.ppt that is really a newer format (renamed, or Word's RTF saved as .doc) is
    read as what it is; a genuine binary one is refused with what to do about it."""
    if zipfile.is_zipfile(path):
        return _LEGACY[suffix]
    with path.open("rb") as fh:
        head = fh.read(64)
    if suffix == ".doc" and head.lstrip().startswith(b"{\\rtf"):
        return ".rtf"
    if head.startswith(OLE_MAGIC):
        raise ParseError(f"legacy {suffix} format is not supported; save it as {_LEGACY[suffix]}")
    raise ParseError(f"not a valid {suffix[1:].upper()} (not a binary Office file)")


def _parse(path: Path, suffix: str) -> Parsed:
    mime = _MIME[suffix]
    if suffix in (".eml", ".msg"):
        from .formats import mail

        return (mail.parse_eml if suffix == ".eml" else mail.parse_msg)(path, mime)
    text = None
    if suffix in _TEXT_SUFFIXES:
        text = read_text(path)
        if not text.strip():
            raise ParseError("empty document: no text found")
    elif suffix == ".pdf":
        check_pdf(path)
    elif suffix == ".rtf":
        if not path.read_bytes()[:64].lstrip().startswith(b"{\\rtf"):
            raise ParseError("not a valid RTF (no {\\rtf header)")
    elif suffix in ZIP_MEMBER:
        check_zip(path, suffix)

    if suffix in (".txt", ".text"):
        assert text is not None
        elements = [Element(p, "text") for p in paragraphs(text)]
    elif suffix in (".json", ".xml"):
        from .formats import structured

        elements = (structured.parse_json if suffix == ".json" else structured.parse_xml)(path)
    else:
        elements = convert(_partition(path, suffix, text), pptx=suffix == ".pptx")

    if not elements:
        if suffix == ".pdf":  # pages, but no text layer: a scan
            return Parsed(title=path.stem, mime=mime, elements=[], needs_ocr=True)
        raise ParseError("empty document: no text found")
    title = next((e.text for e in elements if e.kind == "title" and e.level == 1), path.stem)
    return Parsed(title=title, mime=mime, elements=elements)


def _partition(path: Path, suffix: str, text: str | None) -> list[Any]:
    """Run the partitioner for `suffix`; imports are lazy so importing this module stays cheap."""
    partition, kwargs = _partitioner(path, suffix, text)
    skip_narrative_checks()  # in the modules importing the partitioner brought in
    return list(partition(**kwargs))


def _partitioner(path: Path, suffix: str, text: str | None) -> tuple[Any, dict[str, Any]]:
    filename = str(path)
    if suffix == ".pdf":
        from unstructured.partition.pdf import partition_pdf

        # languages given so it does not log a "defaulting to English" warning per file
        return partition_pdf, dict(filename=filename, strategy="fast", languages=["eng"])
    lean = {"languages": NO_LANGUAGE}
    if suffix in (".md", ".markdown"):
        from unstructured.partition.md import partition_md

        return partition_md, dict(text=text, **lean)
    if suffix in (".html", ".htm"):
        from unstructured.partition.html import partition_html

        return partition_html, dict(text=text, **lean)
    if suffix in (".csv", ".tsv"):
        from unstructured.partition.csv import partition_csv
        from unstructured.partition.tsv import partition_tsv

        assert text is not None
        data = io.BytesIO(text.encode("utf-8"))
        if suffix == ".tsv":
            return partition_tsv, dict(file=data, **lean)
        return partition_csv, dict(file=data, encoding="utf-8", **lean)
    if suffix == ".docx":
        from unstructured.partition.docx import partition_docx

        return partition_docx, dict(filename=filename, **lean)
    if suffix == ".pptx":
        from unstructured.partition.pptx import partition_pptx

        return partition_pptx, dict(filename=filename, **lean)
    if suffix == ".xlsx":
        from unstructured.partition.xlsx import partition_xlsx

        return partition_xlsx, dict(filename=filename, **lean)
    if suffix == ".odt":
        from unstructured.partition.odt import partition_odt

        return partition_odt, dict(filename=filename, **lean)
    if suffix == ".rtf":
        from unstructured.partition.rtf import partition_rtf

        return partition_rtf, dict(filename=filename, **lean)
    if suffix == ".epub":
        from unstructured.partition.epub import partition_epub

        return partition_epub, dict(filename=filename, **lean)
    raise ParseError(f"unsupported file type: {suffix}")
