"""A corpus of bad files, generated on the spot (nothing binary is checked in), each with a word
its ParseError must contain; None marks a file that looks odd but must parse."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ingest.formats.containers import OLE_MAGIC

from .test_parse import make_docx, make_pdf

BAD_FILES: dict[str, str | None] = {
    "empty.md": "empty file",
    "whitespace.txt": "empty document",
    "blank.docx": "empty document",
    "random.pdf": "not a valid PDF",
    "corrupt.pdf": "corrupt PDF",
    "truncated.pdf": "corrupt PDF",
    "encrypted.pdf": "encrypted PDF: needs a password",
    "random.docx": "not a valid DOCX",
    "truncated.docx": "not a valid DOCX",
    "password.docx": "password-protected",
    "random.md": "not a text file",
    "picture.txt": "not a text file",
    "bomb.docx": "refused: decompression bomb",
    "bomb.xlsx": "refused: decompression bomb",
    "crowded.docx": "refused: decompression bomb",
    "legacy.doc": "legacy .doc format is not supported; save it as .docx",
    "legacy.xls": "legacy .xls format is not supported; save it as .xlsx",
    "random.eml": "not a valid email",
    "random.msg": "not a valid MSG",
    "broken.json": "not valid JSON",
    "deep.json": "nested too deeply",
    "broken.xml": "not valid XML",
    "laughs.xml": "refused: XML entity expansion bomb",
    "slow.sleep": "longer than",  # needs tests/ingest/hooked_child.py as the parser child
    "utf16.txt": None,
    "utf16-no-bom.md": None,
}


def write_bad_files(folder: Path) -> dict[str, str | None]:
    """Write every file of BAD_FILES into `folder`; returns {file name: expected keyword}."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in BAD_FILES:
        _WRITERS[name](folder / name)
    return dict(BAD_FILES)


def _random(path: Path) -> None:
    path.write_bytes(b"\x00\x01" + os.urandom(4096))


def _truncated_pdf(path: Path) -> None:
    whole = make_pdf(path, [["Some text on a page."]] * 3).read_bytes()
    path.write_bytes(whole[: len(whole) // 3])


def _encrypted_pdf(path: Path) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(make_pdf(path, [["Top secret."]]).read_bytes()))
    writer.encrypt(user_password="secret", owner_password="owner")
    writer.write(path)


def _truncated_docx(path: Path) -> None:
    whole = make_docx(path).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def _blank_docx(path: Path) -> None:
    import docx

    docx.Document().save(str(path))


def _picture(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(path, format="PNG")


def deflated_zeros(mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of `mib` MiB of zeros and its CRC-32, without compressing them all:
    after a full flush the compressor starts afresh, so every MiB compresses to the same block."""
    zeros = bytes(2**20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return block * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), crc


def write_zip(
    path: Path, members: dict[str, bytes], deflated: dict[str, tuple[bytes, int, int]]
) -> None:
    """A zip of stored `members` plus already-deflated ones given as (data, crc, size)."""
    out = io.BytesIO()
    central = b""
    entries = [(n, d, 0, zlib.crc32(d), len(d)) for n, d in members.items()]
    entries += [(n, d, 8, crc, size) for n, (d, crc, size) in deflated.items()]
    for name, data, method, crc, size in entries:
        offset = out.tell()
        raw = name.encode()
        out.write(
            struct.pack(
                "<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc, len(data), size, len(raw), 0
            )
        )
        out.write(raw + data)
        central += struct.pack(
            "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 33, crc, len(data), size,
            len(raw), 0, 0, 0, 0, 0, offset,
        ) + raw  # fmt: skip
    start = out.tell()
    out.write(central)
    out.write(
        struct.pack(
            "<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), start, 0
        )
    )
    path.write_bytes(out.getvalue())


_DOCX_TYPES = b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>'


def _bomb_docx(path: Path) -> None:
    """1.1 GiB of zeros as the document body, in a file of about 1 MB."""
    data, crc = deflated_zeros(1100)
    write_zip(
        path, {"[Content_Types].xml": _DOCX_TYPES}, {"word/document.xml": (data, crc, 1100 * 2**20)}
    )


def _bomb_xlsx(path: Path) -> None:
    """A genuine workbook with 60 MiB of zeros added: a ratio far over 100:1."""
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["name", "qty"])
    book.save(str(path))
    data, crc = deflated_zeros(60)
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    write_zip(path, members, {"xl/media/image1.bin": (data, crc, 60 * 2**20)})


def _crowded_docx(path: Path) -> None:
    members = {"[Content_Types].xml": _DOCX_TYPES, "word/document.xml": b"<w:document/>"}
    members |= {f"word/media/{n}.txt": b"" for n in range(10_000)}
    write_zip(path, members, {})


def _laughs(path: Path) -> None:
    entities = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    path.write_text(f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY l0 "lol">{entities}]><r>&l9;</r>')


_WRITERS: dict[str, Callable[[Path], object]] = {
    "empty.md": lambda p: p.write_bytes(b""),
    "whitespace.txt": lambda p: p.write_text(" \n\n\t \n"),
    "blank.docx": _blank_docx,
    "random.pdf": _random,
    "corrupt.pdf": lambda p: p.write_bytes(b"%PDF-1.4\n" + os.urandom(2048)),
    "truncated.pdf": _truncated_pdf,
    "encrypted.pdf": _encrypted_pdf,
    "random.docx": _random,
    "truncated.docx": _truncated_docx,
    "password.docx": lambda p: p.write_bytes(OLE_MAGIC + os.urandom(2048)),
    "random.md": _random,
    "picture.txt": _picture,
    "bomb.docx": _bomb_docx,
    "bomb.xlsx": _bomb_xlsx,
    "crowded.docx": _crowded_docx,
    "legacy.doc": lambda p: p.write_bytes(OLE_MAGIC + bytes(2048)),
    "legacy.xls": lambda p: p.write_bytes(OLE_MAGIC + bytes(2048)),
    "random.eml": _random,
    "random.msg": _random,
    "broken.json": lambda p: p.write_text('{"a": [1, 2,'),
    "deep.json": lambda p: p.write_text("[" * 100_000 + "]" * 100_000),
    "broken.xml": lambda p: p.write_text("<a><b>text</a>"),
    "laughs.xml": _laughs,
    "slow.sleep": lambda p: p.write_text("3600"),
    "utf16.txt": lambda p: p.write_text("Grüße aus Köln.\n\nZweiter Absatz.", encoding="utf-16"),
    "utf16-no-bom.md": lambda p: p.write_bytes("# Titel\n\nGrüße aus Köln.".encode("utf-16-le")),
}
