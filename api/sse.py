"""A backend's Server-Sent Events as bytes: the complete lines of each read, and what Hearth must
know of them (the end, a finish_reason, the first token, usage, an error event) found by a cheap
scan instead of parsing every chunk.

Each read of the response gives one `Block`: every complete line that arrived together, exactly as
the backend sent them, so plain chat relays them untouched and a grounded answer handles a read's
tokens at once. The `data: [DONE]` line is held back (the relay says when the answer is done, or
that it failed), and so is a line cut short (it waits for the rest of it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_CONTENT = re.compile(rb'"content"\s*:\s*"(?!")')
_USAGE = re.compile(rb'"usage"\s*:\s*\{')


class BrokenEvent(ValueError):
    """A data line that is not a JSON object (the last line of a stream cut short)."""


class ErrorEvent(Exception):
    """An error event in the stream (llama.cpp's and vLLM's way after the first token)."""

    def __init__(self, body: dict[str, Any], before: Block | None = None) -> None:
        super().__init__(body)
        self.body = body
        self.before = before  # the lines that came before it in the same read


@dataclass
class Block:
    raw: bytes  # complete SSE lines as the backend sent them
    data: list[bytes] = field(default_factory=list)  # the payload of each `data:` event in `raw`
    content: bool = False  # one of the events carries answer text
    usage: dict[str, Any] | None = None  # the usage an event in this read reported


def parse(data: bytes) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        chunk = None
    if not isinstance(chunk, dict):
        raise BrokenEvent(data[:100])
    return chunk


class Scanner:
    """Cuts a byte stream into Blocks and keeps the stream's state. `keep_usage`: a usage-only
    event (`choices: []`) stays in `raw`; else it is taken out (Hearth asks every backend for
    usage, the client may not have)."""

    def __init__(self, *, keep_usage: bool = True) -> None:
        self.keep_usage = keep_usage
        self.rest = b""
        self.done = False  # `[DONE]` arrived
        self.finished = False  # a finish_reason arrived
        self.events = 0
        self.pieces = 0  # events carrying text
        self.usage: dict[str, Any] | None = None

    def feed(self, received: bytes) -> Block | None:
        """The complete lines in what has arrived so far, or None when there are none yet (or
        the stream is past its `[DONE]`, whose remainder is read and dropped)."""
        buf = self.rest + received if self.rest else received
        cut = buf.rfind(b"\n") + 1
        if not cut:
            self.rest = buf
            return None
        raw, self.rest = (buf[:cut], buf[cut:]) if cut < len(buf) else (buf, b"")
        if self.done:
            return None
        return self._scan(raw)

    def end(self) -> None:
        """The response ended: a line left without its end is a broken event."""
        rest, self.rest = self.rest.strip(), b""
        if rest and not self.done and rest.startswith(b"data:"):
            data = rest[5:].strip()
            if data != b"[DONE]":
                raise BrokenEvent(data[:100])
            self.done = True

    def _scan(self, raw: bytes) -> Block | None:
        block = Block(raw)
        pos, size = 0, len(raw)
        drop: list[tuple[int, int]] = []
        while pos < size:
            end = raw.find(b"\n", pos) + 1
            if raw.startswith(b"data:", pos):
                data = raw[pos + 5 : end].strip()
                if data == b"[DONE]":
                    self.done = True
                    drop.append((pos, size))
                    break
                self.events += 1
                if b'"error"' in data:
                    chunk = parse(data)
                    if "error" in chunk and not chunk.get("choices"):
                        raise ErrorEvent(chunk, _cut(block, raw[:pos], drop))
                if _FINISHED.search(data):
                    self.finished = True
                if _CONTENT.search(data):
                    self.pieces += 1
                    block.content = True
                if _USAGE.search(data):
                    chunk = parse(data)
                    if isinstance(chunk.get("usage"), dict):
                        self.usage = block.usage = chunk["usage"]
                    if not self.keep_usage and not chunk.get("choices"):
                        drop.append((pos, end))
                        pos = end
                        continue
                block.data.append(data)
            pos = end
        return _cut(block, raw, drop)


def _cut(block: Block, raw: bytes, drop: list[tuple[int, int]]) -> Block | None:
    """`block` with `raw` for its lines, less the spans in `drop`; None when nothing is left."""
    block.raw = raw
    if drop:
        kept, at = [], 0
        for start, stop in drop:
            kept.append(raw[at:start])
            at = stop
        kept.append(raw[at:])
        block.raw = b"".join(kept)
        if not block.raw.strip():
            block.raw = b""
    if not block.raw and not block.data and block.usage is None:
        return None
    return block
