"""Turn a file into Hearth's elements (titles, text, lists, tables) with `unstructured`, offline.

Files are checked before `unstructured` sees them, because on a bad file it often returns nothing
instead of failing; every failure leaves as a `ParseError` with a short, readable reason.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.offline import go_offline


@dataclass(frozen=True)
class Element:
    text: str
    kind: str  # "title" | "text" | "list" | "table"
    level: int | None = None  # heading depth for titles (1 = top)
    page: int | None = None


@dataclass
class Parsed:
    title: str | None
    mime: str | None
    elements: list[Element]
    needs_ocr: bool = False


class ParseError(Exception):
    """A file Hearth cannot read; str() is the reason, fit to show a user."""


_MIME = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
    ".csv": "text/csv",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".rtf": "application/rtf",
    ".epub": "application/epub+zip",
}
SUPPORTED_SUFFIXES = frozenset(_MIME)

_TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".text", ".html", ".htm", ".csv"})
# a member every genuine file of each zip-based format has
_ZIP_MEMBER = {
    ".docx": "word/document.xml",
    ".pptx": "ppt/presentation.xml",
    ".xlsx": "xl/workbook.xml",
    ".odt": "content.xml",
    ".epub": "META-INF/container.xml",
}
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc/.xls, and password-protected OOXML
_LATIN_CODECS = frozenset(
    {"cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "cp850", "cp775", "mac_roman"}
    | {f"iso8859_{n}" for n in (2, 3, 4, 9, 10, 13, 14, 15, 16)}
)
_DROP = frozenset({"Header", "Footer", "PageNumber", "PageBreak"})
_KIND = {"Title": "title", "ListItem": "list", "Table": "table"}


def parse_file(path: Path) -> Parsed:
    """Parse one file into elements; raises ParseError (only) when it cannot."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
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
        return _parse(path, suffix)
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"could not parse {label}: {_short(exc)}") from exc


def _parse(path: Path, suffix: str) -> Parsed:
    label = suffix[1:].upper()
    text = None
    if suffix in _TEXT_SUFFIXES:
        text = _read_text(path)
        if not text.strip():
            raise ParseError("empty document: no text found")
    elif suffix == ".pdf":
        _check_pdf(path)
    elif suffix == ".rtf":
        if not path.read_bytes()[:64].lstrip().startswith(b"{\\rtf"):
            raise ParseError("not a valid RTF (no {\\rtf header)")
    else:
        _check_zip(path, suffix, label)

    if suffix in (".txt", ".text"):
        assert text is not None
        elements = [Element(p, "text") for p in _paragraphs(text)]
    else:
        elements = _convert(_partition(path, suffix, text), pptx=suffix == ".pptx")

    mime = _MIME[suffix]
    if not elements:
        if suffix == ".pdf":  # pages, but no text layer: a scan
            return Parsed(title=path.stem, mime=mime, elements=[], needs_ocr=True)
        raise ParseError("empty document: no text found")
    title = next((e.text for e in elements if e.kind == "title" and e.level == 1), path.stem)
    return Parsed(title=title, mime=mime, elements=elements)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ParseError(f"not a text file (binary content in a {path.suffix} file)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ParseError("not a text file (unknown encoding or binary content)")
    if best.encoding in _LATIN_CODECS:
        # short Latin texts fit several code pages equally well; Windows-1252 is the likely one
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass
    return str(best)


def _check_pdf(path: Path) -> None:
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
        raise ParseError(f"corrupt PDF: {_short(exc, path)}") from exc
    if pages == 0:
        raise ParseError("empty document: PDF has no pages")


def _check_zip(path: Path, suffix: str, label: str) -> None:
    with path.open("rb") as fh:
        head = fh.read(8)
    if head == _OLE_MAGIC:
        raise ParseError(f"not a valid {label}: password-protected, or an old binary Office file")
    if not zipfile.is_zipfile(path):
        raise ParseError(f"not a valid {label} (corrupt or not a zip)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except zipfile.BadZipFile as exc:
        raise ParseError(f"not a valid {label} (corrupt or not a zip)") from exc
    if _ZIP_MEMBER[suffix] not in names:
        raise ParseError(f"not a valid {label} (a zip without {_ZIP_MEMBER[suffix]})")


def _partition(path: Path, suffix: str, text: str | None) -> list[Any]:
    """Run the partitioner for `suffix`; imports are lazy so importing this module stays cheap."""
    filename = str(path)
    if suffix in (".md", ".markdown"):
        from unstructured.partition.md import partition_md

        return partition_md(text=text)
    if suffix in (".html", ".htm"):
        from unstructured.partition.html import partition_html

        return partition_html(text=text)
    if suffix == ".csv":
        from unstructured.partition.csv import partition_csv

        assert text is not None
        return partition_csv(file=io.BytesIO(text.encode("utf-8")), encoding="utf-8")
    if suffix == ".pdf":
        from unstructured.partition.pdf import partition_pdf

        # languages given so it does not log a "defaulting to English" warning per file
        return partition_pdf(filename=filename, strategy="fast", languages=["eng"])
    if suffix == ".docx":
        from unstructured.partition.docx import partition_docx

        return partition_docx(filename=filename)
    if suffix == ".pptx":
        from unstructured.partition.pptx import partition_pptx

        return partition_pptx(filename=filename)
    if suffix == ".xlsx":
        from unstructured.partition.xlsx import partition_xlsx

        return partition_xlsx(filename=filename)
    if suffix == ".odt":
        from unstructured.partition.odt import partition_odt

        return partition_odt(filename=filename)
    if suffix == ".rtf":
        from unstructured.partition.rtf import partition_rtf

        return partition_rtf(filename=filename)
    if suffix == ".epub":
        from unstructured.partition.epub import partition_epub

        return partition_epub(filename=filename)
    raise ParseError(f"unsupported file type: {suffix}")


def _convert(raw: list[Any], *, pptx: bool) -> list[Element]:
    """Map unstructured elements to ours, dropping furniture (headers, footers, page numbers)."""
    out: list[Element] = []
    for el in raw:
        category = getattr(el, "category", "")
        if category in _DROP:
            continue
        kind = _KIND.get(category, "text")
        meta = el.metadata
        depth = getattr(meta, "category_depth", None)
        text = _table_text(el) if kind == "table" else (el.text or "").strip()
        if not text:
            continue
        level = None
        if kind == "title":
            if pptx and depth:
                # in slides only the title shape is a heading; short body lines merely look like one
                kind = "text"
            else:
                level = depth + 1 if isinstance(depth, int) and depth >= 0 else 1
        out.append(Element(text=text, kind=kind, level=level, page=meta.page_number))
    return out


def _table_text(el: Any) -> str:
    """One line per row, cells joined by " | " (unstructured's own text loses the rows)."""
    html = getattr(el.metadata, "text_as_html", None)
    if html:
        from lxml import html as lxml_html

        try:
            root = lxml_html.fromstring(html)
        except Exception:
            root = None
        if root is not None:
            rows = [
                " | ".join(" ".join(cell.text_content().split()) for cell in tr.xpath("./th|./td"))
                for tr in root.iter("tr")
            ]
            rows = [r for r in rows if r.strip(" |")]
            if rows:
                return "\n".join(rows)
    return (el.text or "").strip()


def _paragraphs(text: str) -> list[str]:
    """Plain text splits on blank lines; unstructured would make every short line a title."""
    return [p.strip() for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]


def _short(exc: BaseException, path: Path | None = None) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path is not None:
        msg = msg.replace(f"{path}: ", "")
    return msg[:200]
