"""The answer check: does some passage the model was given support each sentence of its answer?

A small model invents answers it was told not to give; this catches the plain cases before they
reach the user as fact. A sentence is supported when every number in it appears in the passages
and most of its content words appear in one passage (words compared after light stemming; the
citation markers, filler words and Hearth's own wording are ignored). Sentences too short to judge
("Sure!") and the model's own "the documents do not cover this" are neither.

ANSWER_CHECK decides what happens to an unsupported sentence: `mark` adds NOT_FOUND_MARK (and drops
its citation markers: no passage backs it), `withhold` leaves it out. An answer with unsupported
sentences and no supported one becomes the refusal the caller gives (Hearth's "not covered").

`SentenceGate` does it on a stream: text goes out a sentence at a time, once the sentence is whole
and judged. Until the first supported sentence everything is held, so an answer that turns out to
be wholly unsupported can still become the refusal; after it each sentence goes when it ends.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from core.types import Passage

from .citations import _STOP

Mode = Literal["mark", "withhold", "off"]
NOT_FOUND_MARK = "(not found in your documents)"

_MARKERS = re.compile(r"\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")
_LEADING_MARKERS = re.compile(r"(?:\[\d{1,3}(?:\s*,\s*\d{1,3})*\]\s*)+")
_PARTIAL_MARKER = re.compile(r"^\[[\d,\s]{0,12}$")
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_ABBREVIATION = re.compile(r"(?:\b(?:dr|mr|mrs|ms|st|no|vs|etc|e\.g|i\.e|approx)|\b[a-z])\.$", re.I)
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# words an answer uses about its sources, or as filler, that no passage needs to contain
_FILLER = _STOP | frozenset(
    """according passage passages document documents mentioned mention mentions states stated
    state says said note noted also please answer question information provided given based yes here
    following about just only should would must need needs one two any all some each per other more
    most less than very there sure text source sources context cited cite found shows show shown
    listed""".split()  # noqa: SIM905
)
_REFUSAL = re.compile(
    r"(?:do(?:es)?n't|do(?:es)? not|cannot|can't|could not|couldn't|unable to)\s+"
    r"(?:cover|contain|say|mention|include|find|know|answer|provide)|"
    r"not (?:covered|mentioned|specified|provided|stated|found)|no information|will not guess",
    re.I,
)


def _stem(word: str) -> str:
    for suffix in ("'s", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def _numbers(text: str) -> set[str]:
    out = set()
    for raw in _NUMBER.findall(text):
        n = re.sub(r"(?<=\d),(?=\d{3}\b)", "", raw)  # 45,000 -> 45000
        if re.fullmatch(r"\d+\.\d+", n):
            n = n.rstrip("0").rstrip(".")  # 1.50 -> 1.5, 1.0 -> 1
        out.add(n.lstrip("0") or "0" if n.isdigit() else n)
    return out


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _FILLER and len(w) > 2}


@dataclass(frozen=True)
class Support:
    """What the passages given to the model say, in the terms the check compares."""

    words: tuple[frozenset[str], ...]
    numbers: frozenset[str]

    @classmethod
    def of(cls, passages: Sequence[Passage]) -> Support:
        texts = [" ".join([p.text, p.title or "", *p.heading_path]) for p in passages]
        numbers: set[str] = set()
        for t in texts:
            numbers |= _numbers(t)
            # a date written 2026-06-02 or 12/06 is also its parts
            numbers |= {n.lstrip("0") or "0" for n in re.findall(r"\d+", t)}
        return cls(tuple(frozenset(_words(t)) for t in texts), frozenset(numbers))


def judge(sentence: str, support: Support, *, min_words: float = 0.6) -> bool | None:
    """True: supported; False: not; None: nothing to judge (filler, the model's own refusal)."""
    plain = _MARKERS.sub("", sentence)
    if _REFUSAL.search(plain):
        return None
    numbers, words = _numbers(plain), _words(plain)
    if not numbers and len(words) < 2:
        return None
    if not numbers <= support.numbers:
        return False
    if not words:
        return True
    best = max((len(words & w) / len(words) for w in support.words), default=0.0)
    return best >= min_words


def mark(sentence: str) -> str:
    """The sentence with its citation markers dropped and NOT_FOUND_MARK before its full stop."""
    body = _MARKERS.sub("", sentence)
    stripped = body.rstrip()
    space = body[len(stripped) :]
    end = len(stripped)
    while end and stripped[end - 1] in ".!?":
        end -= 1
    if not stripped[:end].strip():
        return sentence
    return f"{stripped[:end]} {NOT_FOUND_MARK}{stripped[end:]}{space}"


def drop_marked(text: str) -> str:
    """`text` without the sentences the check marked: an earlier answer sent back as history
    should not carry them into the next prompt as if they were so. Linear in `text`."""
    out, pos = [], 0
    while (at := text.find(NOT_FOUND_MARK, pos)) >= 0:
        head = text[pos:at]
        cut = max(head.rfind(c) for c in ".!?\n") + 1  # the end of the sentence before
        out.append(head[:cut] + head[cut : len(head) - len(head[cut:].lstrip())])
        pos = at + len(NOT_FOUND_MARK)
        pos += text[pos : pos + 1] in (".", "!", "?")
        while text[pos : pos + 1] in (" ", "\t"):
            pos += 1
    out.append(text[pos:])
    return "".join(out)


@dataclass
class SentenceGate:
    """Judges an answer sentence by sentence as it streams (see the module's docstring).

    `feed` returns the text that may go to the client now, `finish` the rest; `refused` is set
    when the answer as a whole became `refusal`.
    """

    passages: Sequence[Passage]
    mode: Mode
    refusal: str
    support: Support = field(init=False)
    supported: int = 0
    unsupported: int = 0
    refused: bool = False
    _buffer: str = ""
    _held: list[tuple[str, bool | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.support = Support.of(self.passages)

    def feed(self, piece: str) -> str:
        if self.mode == "off":
            return piece
        self._buffer += piece
        out = []
        while (cut := self._sentence_end()) is not None:
            sentence, self._buffer = self._buffer[:cut], self._buffer[cut:]
            out.append(self._take(sentence))
        return "".join(out)

    def finish(self) -> str:
        if self.mode == "off":
            return ""
        rest, self._buffer = self._buffer, ""
        out = self._take(rest) if rest else ""
        if self.supported == 0 and self.unsupported:
            self.refused, self._held = True, []
            return self.refusal
        held = "".join(self._render(s, v) for s, v in self._held)
        self._held = []
        return out + held

    def _sentence_end(self) -> int | None:
        """Where the first whole sentence in the buffer ends (with markers that follow it), or
        None while that cannot be told yet."""
        for m in _BOUNDARY.finditer(self._buffer):
            before = self._buffer[max(0, m.start() - 12) : m.start()]  # "e.g." fits in it
            if "\n" not in m.group() and _ABBREVIATION.search(before):
                continue
            after = self._buffer[m.end() :]
            if not after:
                return None  # what follows may be markers that belong to this sentence
            lead = _LEADING_MARKERS.match(after)
            if lead:
                if lead.end() == len(after):
                    return None
                return m.end() + lead.end()
            if _PARTIAL_MARKER.match(after):
                return None
            return m.end()
        return None

    def _take(self, sentence: str) -> str:
        verdict = judge(sentence, self.support)
        if verdict is True:
            self.supported += 1
        elif verdict is False:
            self.unsupported += 1
        if self.supported == 0:  # nothing supported yet: the answer may still become the refusal
            self._held.append((sentence, verdict))
            return ""
        held = "".join(self._render(s, v) for s, v in self._held)
        self._held = []
        return held + self._render(sentence, verdict)

    def _render(self, sentence: str, verdict: bool | None) -> str:
        if verdict is not False:
            return sentence
        return mark(sentence) if self.mode == "mark" else ""


def check_answer(
    text: str, passages: Sequence[Passage], mode: Mode, refusal: str
) -> tuple[str, SentenceGate]:
    """A whole answer through the gate: the checked text, and the gate with its counts."""
    gate = SentenceGate(passages, mode, refusal)
    return gate.feed(text) + gate.finish(), gate
