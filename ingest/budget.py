"""What one file may cost: a chunk budget (MAX_FILE_CHUNKS), checked before anything is embedded,
and a wall-clock budget for the whole file (FILE_TIMEOUT_S). One huge file fails with its reason
instead of holding a worker for an hour while every other change waits.

The chunk budget also bounds the text a parser may hand back: more characters than the budget's
chunks could hold even at `CHARS_PER_TOKEN` characters a token (real text has 3 to 6) is refused
by the parser child itself, so the worker never receives it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.embedder import Embedder

# the default MAX_FILE_CHUNKS: at ~15 chunks/s (the packaged MiniLM on two CPU cores, 256-token
# chunks) about 3.5 minutes of embedding, some 1,000 pages of prose
DEFAULT_MAX_CHUNKS = 3000
CHARS_PER_TOKEN = 8
EMBED_SLICE = 256  # texts embedded between two looks at the file's clock


def max_chars(max_chunks: int, chunk_size: int) -> int:
    """The most characters of text a file under the chunk budget can have."""
    return max_chunks * chunk_size * CHARS_PER_TOKEN


def too_much_text(chars: int, max_chunks: int, limit: int) -> str:
    return (
        f"too much text: {chars:,} characters, more than {max_chunks:,} chunks can hold"
        f" ({limit:,} characters; the limit is MAX_FILE_CHUNKS)"
    )


def too_many_chunks(max_chunks: int) -> str:
    return (
        f"too much text: more than {max_chunks:,} chunks (MAX_FILE_CHUNKS);"
        " split the file or raise the limit"
    )


class OutOfTime(Exception):
    """The file's wall-clock budget ran out."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"indexing took longer than {timeout_s:g} s (FILE_TIMEOUT_S) and was stopped"
        )


@dataclass
class Deadline:
    """When the file's time is up (None: never)."""

    timeout_s: float | None
    at: float | None

    def extend(self, seconds: float) -> None:
        """Give the file back time it spent waiting on other files' work (in a batch)."""
        if self.at is not None and seconds > 0:
            self.at += seconds

    @classmethod
    def start(cls, timeout_s: float | None) -> Deadline:
        return cls(timeout_s, time.monotonic() + timeout_s if timeout_s else None)

    def check(self) -> None:
        """Raise OutOfTime once the budget is spent."""
        if self.at is not None and time.monotonic() > self.at:
            assert self.timeout_s is not None
            raise OutOfTime(self.timeout_s)


def embed_within(embedder: Embedder, texts: Sequence[str], deadline: Deadline) -> np.ndarray:
    """`embedder.embed(texts)`, a slice at a time, raising OutOfTime between slices."""
    parts = []
    for start in range(0, len(texts), EMBED_SLICE):
        deadline.check()
        parts.append(np.asarray(embedder.embed(texts[start : start + EMBED_SLICE])))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
