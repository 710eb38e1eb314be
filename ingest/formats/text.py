"""Reading a text file whatever its encoding: UTF-8, UTF-16/32 (with or without a BOM), legacy
code pages; and refusing binary content that merely has a text file's name."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from .base import ParseError

_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_LATIN_CODECS = frozenset(
    {"cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "cp850", "cp775", "mac_roman"}
    | {f"iso8859_{n}" for n in (2, 3, 4, 9, 10, 13, 14, 15, 16)}
)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_SAMPLE = 8192


def read_text(path: Path) -> str:
    """The file's text; ParseError if it is binary or in no recognisable encoding."""
    data = path.read_bytes()
    text = _decode(data, path.suffix)
    sample = text[:_SAMPLE]
    if sample and len(_CONTROL.findall(sample)) > 0.05 * len(sample):
        raise ParseError(f"not a text file (binary content in a {path.suffix} file)")
    return text


def _decode(data: bytes, suffix: str) -> str:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise ParseError(f"not a text file (invalid {codec.upper()})") from exc
    if b"\x00" in data[:_SAMPLE]:
        utf16 = _utf16_without_bom(data[:_SAMPLE])
        if utf16 is None:
            raise ParseError(f"not a text file (binary content in a {suffix} file)")
        return data.decode(utf16, errors="replace")
    try:
        return data.decode("utf-8")
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


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 of mostly Latin text has a zero in every other byte (odd bytes if little-endian)."""
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    even_zeros, odd_zeros = even.count(0) / len(even), odd.count(0) / len(odd)
    if odd_zeros > 0.3 and even_zeros < 0.02:
        return "utf-16-le"
    if even_zeros > 0.3 and odd_zeros < 0.02:
        return "utf-16-be"
    return None


def paragraphs(text: str) -> list[str]:
    """Plain text splits on blank lines; unstructured would make every short line a title."""
    return [p.strip() for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]
