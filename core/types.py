"""Hearth's own types, shared by every room. No framework types leak through these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, ready to embed: `context` (title > headings) is prepended for both
    embedding and full-text search; `text` is what is quoted back to the user."""

    ordinal: int
    text: str
    context: str = ""
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    char_start: int = 0
    char_end: int = 0

    @property
    def embed_text(self) -> str:
        return f"{self.context}\n{self.text}" if self.context else self.text


@dataclass
class Document:
    """A parsed file: its identity (path), fingerprint (hash, size, mtime) and chunks."""

    path: str
    content_hash: str
    size: int
    mtime: float
    mime: str | None = None
    title: str | None = None
    collection: str = "default"
    source: str = "watch"
    chunks: list[Chunk] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with where it came from and how it ranked."""

    chunk_id: int
    document_id: int
    path: str
    title: str | None
    text: str
    heading_path: tuple[str, ...]
    page: int | None
    char_start: int
    char_end: int
    score: float
    collection: str = "default"
    # cosine similarity of the query and the chunk, when the dense leg found it
    similarity: float | None = None

    def as_json(self) -> dict[str, Any]:
        """Where the passage came from and how it ranked, as JSON (its text is the caller's
        choice: a search result carries it whole, a chat source a snippet)."""
        return {
            "document_id": self.document_id,
            "chunk_id": self.chunk_id,
            "path": self.path,
            "title": self.title,
            "collection": self.collection,
            "page": self.page,
            "heading_path": list(self.heading_path),
            "char_start": self.char_start,
            "char_end": self.char_end,
            "score": round(self.score, 6),
        }


@dataclass(frozen=True)
class Citation:
    """A passage the answer cites, under the marker number the prompt gave it."""

    index: int
    passage: Passage

    def as_source(self, snippet_chars: int = 400) -> dict[str, Any]:
        p = self.passage
        snippet = p.text if len(p.text) <= snippet_chars else p.text[:snippet_chars].rstrip() + "…"
        return {"index": self.index, **p.as_json(), "snippet": snippet}
