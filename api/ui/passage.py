"""A cited passage as its page shows it (api/routes/passages.py): the passage's chunks marked
within their neighbours, the document's title and display path (relative to its watched folder,
never an absolute server path), its page and headings, and where to download the file."""

from __future__ import annotations

import re
from typing import Any

from core.settings import Settings
from retrieval.context import CONTEXT_CHUNKS, ContextChunk, InContext
from retrieval.passages import MAX_MERGED_CHUNKS

from ..client_shapes import display_path

_SPAN = re.compile(r"([0-9]{1,10})-([0-9]{1,10})")


def parse_span(value: str | None) -> tuple[int, int] | None:
    """`start-end` (character offsets in the document) of a merged passage, as a citation URL
    carries it; anything else is no span (the cited chunk alone is the passage)."""
    match = _SPAN.fullmatch(value or "")
    if not match:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    return (start, end) if start < end else None


def _marked(found: InContext, span: tuple[int, int] | None) -> tuple[int, int]:
    """(first, last) index in `found.chunks` of the passage: the cited chunk, and, when `span`
    covers it, its neighbours inside the span that a merged passage joined to it."""
    at = next(i for i, c in enumerate(found.chunks) if c.id == found.chunk_id)
    first = last = at
    if span is None:
        return first, last
    start, end = span
    chunks = found.chunks

    def inside(c: ContextChunk) -> bool:
        return start <= c.char_start and c.char_end <= end

    if not inside(chunks[at]):
        return first, last

    def joins(i: int, j: int) -> bool:  # chunk j is chunk i's neighbour and inside the span
        return (
            0 <= j < len(chunks)
            and abs(chunks[j].ordinal - chunks[i].ordinal) == 1
            and inside(chunks[j])
        )

    while last - first + 1 < MAX_MERGED_CHUNKS:
        if joins(first, first - 1):
            first -= 1
        elif joins(last, last + 1):
            last += 1
        else:
            break
    return first, last


def segments(chunks: list[ContextChunk], marked: set[int]) -> list[dict[str, Any]]:
    """The chunks as consecutive pieces of the document's text. Chunks overlap (a few sentences
    shared by neighbours, by their character offsets): the overlap is shown once, and inside
    the passage when one side is in it, so the marked text holds the whole passage."""
    out: list[dict[str, Any]] = []
    texts = [c.text for c in chunks]
    continues = [False] * len(chunks)
    for i in range(1, len(chunks)):
        prev, cur = chunks[i - 1], chunks[i]
        overlap = prev.char_end - cur.char_start
        if overlap < 0 or cur.ordinal != prev.ordinal + 1:
            continue
        continues[i] = True
        if cur.id in marked and prev.id not in marked:
            texts[i - 1] = texts[i - 1][: max(0, len(texts[i - 1]) - overlap)]
        else:
            texts[i] = texts[i][overlap:]
    for c, text, joined in zip(chunks, texts, continues, strict=True):
        out.append(
            {
                "chunk_id": c.id,
                "text": text,
                "continues": joined,  # the previous piece's text goes on here (else a break)
                "highlight": c.id in marked,
                "page": c.page,
                "heading_path": list(c.heading_path),
            }
        )
    return out


def _joined(pieces: list[dict[str, Any]]) -> str:
    return "".join(
        p["text"] if i == 0 or p["continues"] else "\n\n" + p["text"] for i, p in enumerate(pieces)
    )


def view(settings: Settings, found: InContext, span: tuple[int, int] | None) -> dict[str, Any]:
    first, last = _marked(found, span)
    shown = list(found.chunks[max(0, first - CONTEXT_CHUNKS) : last + 1 + CONTEXT_CHUNKS])
    marked = {c.id for c in found.chunks[first : last + 1]}
    target = next(c for c in found.chunks if c.id == found.chunk_id)
    pieces = segments(shown, marked)
    file_id = f"file-{found.document_id}"
    return {
        "object": "passage",
        "id": found.chunk_id,
        "document": {
            "id": file_id,
            "title": found.title,
            "path": display_path(settings, found.path),
            "collection": found.collection,
            "mime": found.mime,
            "chunk_count": found.chunk_count,
            "download_url": f"/v1/files/{file_id}/content",
        },
        "page": target.page,
        "heading_path": list(target.heading_path),
        "text": _joined([p for p in pieces if p["highlight"]]),
        "context": pieces,
        "more_before": shown[0].ordinal > 0,
        "more_after": shown[-1].ordinal < found.chunk_count - 1,
    }
