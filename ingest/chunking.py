"""Structure-aware chunking: sections by heading, packed to a token budget, each chunk a span of
the document text so citations can point back into it."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from core.types import Chunk
from ingest.parse import Element

SEP = "\n\n"
_WORD = re.compile(r"\S+")
_LINE = re.compile(r"[^\n]+")
_SENTENCE_END = re.compile(r"[.!?。！？][\"'”’)\]]*$")

_NEWLINE_AHEAD = re.compile(r"[ \t\r\f\v]*\n")
# an element longer than this many characters per token of the budget is windowed without
# first counting its tokens whole (real text has 3-6; only runs of unknown "words" have more)
_MAX_CHARS_PER_TOKEN = 32

Span = tuple[int, int]
Counter = Callable[[str], int]


class TooManyChunks(ValueError):
    """The document makes more than `limit` chunks (found while chunking, before any embedding)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} chunks")
        self.limit = limit


def document_text(elements: Sequence[Element]) -> str:
    """The canonical text of a document, which every chunk's char offsets point into."""
    return SEP.join(e.text for e in elements)


def chunk_elements(
    elements: Sequence[Element],
    *,
    title: str | None,
    count_tokens: Counter,
    chunk_size: int,
    overlap: int,
    max_chunks: int | None = None,
) -> list[Chunk]:
    """Split elements into chunks of at most `chunk_size` tokens, never across a heading.

    A title opens a section; the heading lines of a section are the start of its first chunk, and
    a run of headings with nothing between them (``# A`` then ``## B``) joins the next section's
    first chunk, whose heading path is the one in force at its body, so no heading is lost and no
    chunk is only a heading (except headings that end the document). Within a section consecutive
    elements are packed while they fit. An element too big for the budget becomes windows of
    sentences (falling back to words, then characters) with `overlap` tokens shared between
    consecutive windows; a table is cut only between rows, and a single row over the budget is
    kept whole. Every chunk is ``document_text(elements)[char_start:char_end]``.

    Chunks are made one at a time (`iter_chunks`); with `max_chunks`, TooManyChunks is raised as
    soon as one more would be made, so the work and memory spent are bounded by the budget, not
    by the size of the document.
    """
    out: list[Chunk] = []
    for c in iter_chunks(
        elements, title=title, count_tokens=count_tokens, chunk_size=chunk_size, overlap=overlap
    ):
        if max_chunks is not None and len(out) >= max_chunks:
            raise TooManyChunks(max_chunks)
        out.append(c)
    return out


def iter_chunks(
    elements: Sequence[Element],
    *,
    title: str | None,
    count_tokens: Counter,
    chunk_size: int,
    overlap: int,
) -> Iterator[Chunk]:
    """The chunks of `chunk_elements`, made lazily: a huge paragraph is windowed as it is read."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if not 0 <= overlap < chunk_size:
        raise ValueError("overlap must be >= 0 and smaller than chunk_size")
    doc = document_text(elements)
    starts: list[int] = []
    pos = 0
    for el in elements:
        starts.append(pos)
        pos += len(el.text) + len(SEP)

    def bounds(i: int) -> Span:
        text = elements[i].text
        start = starts[i] + len(text) - len(text.lstrip())
        return start, starts[i] + len(text.rstrip())

    def units(heads: list[int], body: list[int]) -> Iterator[tuple[Span, bool]]:
        """(span, packable with its neighbours) of one section, in order."""
        if not body:
            yield (bounds(heads[0])[0], bounds(heads[-1])[1]), True
        for n, i in enumerate(body):
            start, end = bounds(i)
            if n == 0 and heads:
                start = bounds(heads[0])[0]
            small = end - start <= chunk_size * _MAX_CHARS_PER_TOKEN
            if small and count_tokens(doc[start:end]) <= chunk_size:
                yield (start, end), True
            elif elements[i].kind == "table":
                for span in _split_lines(doc, start, end, count_tokens, chunk_size):
                    yield span, False
            else:
                for span in _split_text(doc, start, end, count_tokens, chunk_size, overlap):
                    yield span, False

    ordinal = 0
    for path, heads, body in _sections(elements):
        crumbs = [h for h in path if h and h != title]
        context = " > ".join([title, *crumbs] if title else crumbs)
        for start, end in _pack(doc, units(heads, body), count_tokens, chunk_size):
            page = elements[bisect.bisect_right(starts, start) - 1].page
            yield Chunk(
                ordinal=ordinal,
                text=doc[start:end],
                context=context,
                heading_path=path,
                page=page,
                char_start=start,
                char_end=end,
            )
            ordinal += 1


def _sections(
    elements: Sequence[Element],
) -> list[tuple[tuple[str, ...], list[int], list[int]]]:
    """(heading path, indices of leading headings, indices of body elements) per section."""
    sections: list[tuple[tuple[str, ...], list[int], list[int]]] = []
    stack: list[tuple[int, str]] = []
    heads: list[int] = []
    body: list[int] = []
    for i, el in enumerate(elements):
        if not el.text.strip():
            continue
        if el.kind != "title":
            body.append(i)
            continue
        if body:
            sections.append((tuple(t for _, t in stack), heads, body))
            heads, body = [], []
        level = el.level or 1
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, el.text.strip()))
        heads.append(i)
    if heads or body:
        sections.append((tuple(t for _, t in stack), heads, body))
    return sections


def _pack(
    doc: str, units: Iterable[tuple[Span, bool]], count: Counter, size: int
) -> Iterator[Span]:
    """Merge consecutive packable spans while the merged span fits; windows stay on their own."""
    cur: Span | None = None
    for span, packable in units:
        if cur is not None and packable and count(doc[cur[0] : span[1]]) <= size:
            cur = (cur[0], span[1])
            continue
        if cur is not None:
            yield cur
        cur = span if packable else None
        if not packable:
            yield span
    if cur is not None:
        yield cur


def _split_lines(doc: str, start: int, end: int, count: Counter, size: int) -> Iterator[Span]:
    """Pack whole lines (table rows) up to the budget; a row over the budget stands alone."""
    cur: Span | None = None
    for m in _LINE.finditer(doc, start, end):
        if not m.group().strip():
            continue
        if cur is not None and count(doc[cur[0] : m.end()]) <= size:
            cur = (cur[0], m.end())
        else:
            if cur is not None:
                yield cur
            cur = (m.start(), m.end())
    if cur is not None:
        yield cur


class _Words:
    """The word spans of ``doc[start:end]`` by index, found as they are asked for and forgotten
    once passed: a huge paragraph is never held as one list."""

    def __init__(self, doc: str, start: int, end: int) -> None:
        self._found = _WORD.finditer(doc, start, end)
        self._spans: list[Span] = []
        self._first = 0  # the index of _spans[0]

    def has(self, k: int) -> bool:
        while k - self._first >= len(self._spans):
            m = next(self._found, None)
            if m is None:
                return False
            self._spans.append(m.span())
        return True

    def __getitem__(self, k: int) -> Span:
        if not self.has(k):
            raise IndexError(k)
        return self._spans[k - self._first]

    def replace(self, k: int, spans: list[Span]) -> None:
        self.has(k)
        self._spans[k - self._first : k - self._first + 1] = spans

    def forget_before(self, k: int) -> None:
        if k > self._first:
            del self._spans[: k - self._first]
            self._first = k


def _split_text(
    doc: str, start: int, end: int, count: Counter, size: int, overlap: int
) -> Iterator[Span]:
    """Windows of whole words, ending on a sentence where one falls in the window's back half."""
    pieces = _Words(doc, start, end)
    i = 0
    while pieces.has(i):
        pieces.forget_before(i)
        if count(doc[pieces[i][0] : pieces[i][1]]) > size:
            pieces.replace(i, _split_chars(doc, pieces[i], count, size))
            continue

        def fits(j: int, lo: int = i, limit: int = size) -> bool:
            return pieces.has(j) and count(doc[pieces[lo][0] : pieces[j][1]]) <= limit

        j = _last_true(i, i + end - start, fits)  # no more words than characters
        if pieces.has(j + 1):
            for k in range(j, i + (j - i) // 2 - 1, -1):
                if _ends_sentence(doc, pieces[k][1], end):
                    j = k
                    break
        yield pieces[i][0], pieces[j][1]
        if not pieces.has(j + 1):
            break
        nxt = j + 1
        if overlap > 0 and j > i:
            # earliest start after i whose tail up to j fits the overlap
            lo, hi = i + 1, j + 1
            while lo < hi:
                mid = (lo + hi) // 2
                if count(doc[pieces[mid][0] : pieces[j][1]]) <= overlap:
                    hi = mid
                else:
                    lo = mid + 1
            if lo <= j and count(doc[pieces[lo][0] : pieces[j + 1][1]]) <= size:
                nxt = lo  # only when the window from there still gets past j
        i = nxt


def _split_chars(doc: str, span: Span, count: Counter, size: int) -> list[Span]:
    """A single "word" over the budget (a long URL, base64): cut it into fitting runs."""
    out: list[Span] = []
    start, end = span
    while start < end:

        def fits(stop: int, begin: int = start) -> bool:
            return count(doc[begin:stop]) <= size

        stop = _last_true(start + 1, end, fits)
        out.append((start, stop))
        start = stop
    return out


def _last_true(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Largest x in [lo, hi] with ok(x), assuming ok is monotone and ok(lo) (or lo is the floor)."""
    good, step = lo, 1
    bad = hi + 1
    while good < hi:
        cand = min(good + step, hi)
        if ok(cand):
            good, step = cand, step * 2
        else:
            bad = cand
            break
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def _ends_sentence(doc: str, pos: int, limit: int) -> bool:
    if _SENTENCE_END.search(doc, max(0, pos - 4), pos):
        return True
    return _NEWLINE_AHEAD.match(doc, pos, limit) is not None
