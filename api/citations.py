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
            text, self._pending = text[: partial.start()], text[partial.start():]
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


def sources_footer(citations: Sequence[Citation]) -> str:
    """A readable "Sources" list for chat UIs that ignore the extra `sources` field."""
    if not citations:
        return ""
    lines = ["", "", "Sources:"]
    for c in citations:
        p = c.passage
        where = [p.title or p.path.rsplit("/", 1)[-1]]
        if p.page:
            where.append(f"page {p.page}")
        if p.heading_path:
            where.append("§ " + " > ".join(p.heading_path))
        lines.append(f"[{c.index}] " + ", ".join(where) + f" ({p.path})")
    return "\n".join(lines)
