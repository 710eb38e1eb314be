"""Receiving an upload safely: a multipart body streamed straight to disk with a size limit, and a
file name that cannot escape the folder it is stored in."""

from __future__ import annotations

import asyncio
import os
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from .errors import APIError
from .textguard import CODE, message

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_NAME_BYTES = 200  # filesystems allow 255; leaves room for a suffix added by other tools
MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
# what a multipart body may add to the file's own bytes (boundaries, headers, small fields)
FORM_OVERHEAD = MAX_FIELDS * MAX_FIELD_BYTES + 64 * 1024
_WINDOWS_RESERVED = frozenset('<>:"|?*')


def sanitize_filename(raw: str) -> str:
    """A safe, readable file name from what a client sent: its last path component (`/` and `\\`
    both separate), without control characters or a leading dot, unicode kept, length-capped."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        "_" if ch in _WINDOWS_RESERVED else ch
        for ch in name
        if not unicodedata.category(ch).startswith("C")  # controls, NUL, bidi overrides
    )
    name = " ".join(name.split()).strip(" .")
    if len(name.encode()) > MAX_NAME_BYTES:
        stem, suffix = os.path.splitext(name)
        if len(suffix.encode()) > 16:
            stem, suffix = name, ""
        budget = MAX_NAME_BYTES - len(suffix.encode())
        stem = stem.encode()[:budget].decode("utf-8", "ignore").rstrip(" .")
        name = stem + suffix if stem else ""
    return name or "upload"


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class MultipartUpload:
    """One multipart/form-data body: the `file` part is written to `tmp` as it arrives, the other
    (small) fields are kept in `fields`. Nothing is left at `tmp` when receiving fails."""

    def __init__(self, tmp: Path, max_bytes: int) -> None:
        self.tmp, self.max_bytes = tmp, max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self._file: IO[bytes] | None = None
        self._pending: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._header = self._value = b""
        self._name = ""
        self._in_file = False
        self._data = bytearray()
        self._too_large: APIError | None = None
        self._ended = False  # the closing boundary was seen

    async def receive(
        self, stream: AsyncIterator[bytes], boundary: bytes, too_large: APIError
    ) -> None:
        """Read the whole body; raise `too_large` the moment the file passes `max_bytes`."""
        self._too_large = too_large
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        parser = MultipartParser(boundary, callbacks)
        try:
            async for chunk in stream:
                parser.write(chunk)
                await self._flush()
            parser.finalize()
            if not self._ended:  # python-multipart's finalize does not check (its TODO)
                raise APIError(
                    400,
                    "The multipart/form-data body ends before its closing boundary: the upload"
                    " was cut short, and nothing was stored.",
                    param="file",
                    code="incomplete_upload",
                )
            await self._flush()
        except FormParserError:
            self._discard()
            raise APIError(400, "Malformed multipart/form-data body.") from None
        except ClientDisconnect:
            self._discard()
            raise APIError(400, "The client went away during the upload.") from None
        except BaseException:
            self._discard()
            raise
        finally:
            if self._file is not None:
                self._file.close()

    async def _flush(self) -> None:
        if self._pending and self._file is not None:
            data = b"".join(self._pending)
            self._pending.clear()
            await asyncio.to_thread(self._file.write, data)

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
        self.tmp.unlink(missing_ok=True)

    # python-multipart's callbacks ---------------------------------------------------------
    def _part_begin(self) -> None:
        self._headers, self._data, self._in_file = {}, bytearray(), False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        self._name = _decode(options.get(b"name", b""))
        if b"filename" not in options:
            if len(self.fields) >= MAX_FIELDS:
                raise APIError(400, f"Too many form fields (at most {MAX_FIELDS}).")
            return
        if self._name != FILE_FIELD:
            raise APIError(
                400, f"Unexpected file field {self._name!r}: send the file as 'file'.", param="file"
            )
        if self._file is not None:
            raise APIError(400, "Send one file per request.", param="file")
        self.filename = _decode(options[b"filename"])
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.tmp.open("xb")
        self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.size += end - start
            if self.size > self.max_bytes:
                assert self._too_large is not None
                raise self._too_large
            self._pending.append(data[start:end])
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise APIError(400, f"Form field {self._name!r} is too long.", param=self._name)

    def _part_end(self) -> None:
        if not self._in_file:
            value = _decode(bytes(self._data))
            if "\x00" in value:  # PostgreSQL text cannot hold one (see api.textguard)
                raise APIError(400, message(self._name), param=self._name, code=CODE)
            self.fields.setdefault(self._name, value)
        self._in_file = False

    def _end(self) -> None:
        self._ended = True
