"""Checking `[n]` markers against the passages that were actually given to the model."""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.types import Citation, Passage

# [1], [1,2], [1, 2] — a group of passage numbers in one pair of brackets
_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
# an unfinished marker at the end of a streamed piece: "[", "[1", "[1,", "[1, 2"
_PARTIAL = re.compile(r"\[[\d,\s]{0,12}$")


class CitationChecker:
    """Rewrites markers so only valid ones remain, and records which passages were cited.

    `feed` takes streamed text and returns what is safe to emit now (a marker split across
    pieces is held back until it closes); `finish` flushes the rest. `check` does a whole text.
    """

    def __init__(self, passage_count: int) -> None:
        self.n = passage_count
        self.cited: list[int] = []
        self._pending = ""

    def _rewrite(self, match: re.Match[str]) -> str:
        nums = [int(x) for x in re.split(r"\s*,\s*", match.group(1))]
        valid = [k for k in dict.fromkeys(nums) if 1 <= k <= self.n]
        for k in valid:
            if k not in self.cited:
                self.cited.append(k)
        return "".join(f"[{k}]" for k in valid)

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        partial = _PARTIAL.search(text)
        if partial:
            text, self._pending = text[: partial.start()], text[partial.start() :]
        else:
            self._pending = ""
        return _MARKER.sub(self._rewrite, text)

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        return _MARKER.sub(self._rewrite, rest)

    def check(self, text: str) -> str:
        return self.feed(text) + self.finish()

    def citations(self, passages: Sequence[Passage]) -> list[Citation]:
        return [Citation(k, passages[k - 1]) for k in self.cited]

    def cite(self, numbers: Sequence[int]) -> None:
        """Record passages cited by attribution rather than by the model's own markers."""
        for k in numbers:
            if 1 <= k <= self.n and k not in self.cited:
                self.cited.append(k)


_WORD = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "may",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def _content_words(text: str) -> set[str]:
    return {
        w for w in _WORD.findall(text.lower()) if w not in _STOP and (len(w) > 2 or w.isdigit())
    }


def attribute(
    answer: str, passages: Sequence[Passage], *, min_support: float = 0.6, min_words: int = 3
) -> list[tuple[int, int]]:
    """For answers without markers: which passage supports each sentence, by word overlap.

    Returns (end offset of the sentence in `answer`, passage number) pairs for sentences whose
    content words are at least `min_support` present in one passage. A sentence the passages do
    not support gets no citation, so nothing unsupported is dressed up as sourced.
    """
    vocab = [_content_words(p.text + " " + (p.title or "")) for p in passages]
    out: list[tuple[int, int]] = []
    start = 0
    for match in [*_SENTENCE_END.finditer(answer), None]:
        end = match.start() if match else len(answer)
        words = _content_words(answer[start:end])
        if len(words) >= min_words and vocab:
            support = [len(words & v) / len(words) for v in vocab]
            best = max(range(len(support)), key=support.__getitem__)
            if support[best] >= min_support:
                out.append((end, best + 1))
        start = match.end() if match else end
    return out


def insert_markers(answer: str, marks: Sequence[tuple[int, int]]) -> str:
    """Put `[n]` at the given offsets (end of each supported sentence)."""
    for end, n in sorted(marks, reverse=True):
        answer = answer[:end] + f" [{n}]" + answer[end:]
    return answer
