"""From ranked chunks to the passages given to people and to the model: adjacent chunks of one
document merge into one passage, near-duplicates are dropped, and each document gets at most a
few passages, so one long file cannot crowd out the rest."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from core.types import Passage

_WORD = re.compile(r"\w+")
MAX_MERGED_CHUNKS = 3  # a merged passage spans at most this many chunks


@dataclass(frozen=True)
class RefineOptions:
    limit: int = 5
    max_per_document: int = 2  # 0: no cap
    merge_adjacent: bool = True
    dedup_threshold: float = 0.9  # word-trigram Jaccard at or above which a passage is a repeat


def shingles(text: str) -> frozenset[str]:
    """Word trigrams of the lower-cased text (the words themselves for very short texts)."""
    words = _WORD.findall(text.lower())
    if len(words) < 3:
        return frozenset(words)
    return frozenset(" ".join(words[i : i + 3]) for i in range(len(words) - 2))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _repeats(a: frozenset[str], b: frozenset[str], threshold: float) -> bool:
    # Jaccard <= min/max of the sizes: most pairs are told apart without intersecting
    small, big = sorted((len(a), len(b)))
    return (not big or small / big >= threshold) and jaccard(a, b) >= threshold


def join_spans(first: Passage, second: Passage) -> Passage:
    """`first` and `second` (the chunk right after it) as one passage. Chunks are spans of the
    document text, so an overlap is cut at the offsets; a gap becomes a paragraph break."""
    overlap = first.char_end - second.char_start
    text = first.text + (second.text[overlap:] if overlap > 0 else "\n\n" + second.text)
    return replace(
        first,
        text=text,
        char_end=max(first.char_end, second.char_end),
        char_start=min(first.char_start, second.char_start),
    )


@dataclass
class _Picked:
    passage: Passage
    first: int  # ordinals covered
    last: int
    shingles: frozenset[str]


def refine(ranked: Sequence[tuple[Passage, int]], opts: RefineOptions) -> list[Passage]:
    """Walk (passage, chunk ordinal) pairs best first and keep up to `opts.limit` passages.

    A chunk next to one already kept (same document, neighbouring ordinal) is merged into it and
    the merged passage keeps the better rank and score; a chunk that repeats a kept passage
    (Jaccard >= dedup_threshold) is dropped, as is a chunk of a document that already has
    `max_per_document` passages.
    """
    picked: list[_Picked] = []
    per_doc: dict[int, list[_Picked]] = {}
    for passage, ordinal in ranked:
        if len(picked) >= opts.limit:
            break
        mine = per_doc.setdefault(passage.document_id, [])
        if opts.merge_adjacent and _merge(mine, passage, ordinal):
            continue
        if opts.max_per_document and len(mine) >= opts.max_per_document:
            continue
        sh = shingles(passage.text)
        if any(_repeats(sh, p.shingles, opts.dedup_threshold) for p in picked):
            continue
        item = _Picked(passage, ordinal, ordinal, sh)
        picked.append(item)
        mine.append(item)
    return [p.passage for p in picked]


def _merge(mine: list[_Picked], passage: Passage, ordinal: int) -> bool:
    for p in mine:
        if p.last - p.first + 1 >= MAX_MERGED_CHUNKS:
            continue
        if ordinal == p.last + 1:
            p.passage = join_spans(p.passage, passage)
            p.last = ordinal
        elif ordinal == p.first - 1:
            merged = join_spans(passage, p.passage)
            p.passage = replace(merged, chunk_id=p.passage.chunk_id, score=p.passage.score)
            p.first = ordinal
        else:
            continue
        p.shingles = shingles(p.passage.text)
        return True
    return False
