"""The end of a chat turn, said once for the JSON answer and the stream: the answer's text on its
way from the backend to the client (citation markers checked piece by piece), then attribution
when the model cited nothing, the sources, the footer, the client's citation shapes, and the turn
kept in its conversation.

`AnswerFlow` is the one place every piece of answer text passes through, in order, on both paths:
`feed` for each piece the client will receive, `finish` at the end. A check of the answer's
sentences belongs in those two methods.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from core.types import Citation, Passage

from . import client_shapes
from .answercheck import SentenceGate
from .citations import CitationChecker, attribute, insert_markers
from .store.conversations import NewTurn
from .textguard import clean_text

if TYPE_CHECKING:
    from .chat import Services, Turn


@dataclass
class Ending:
    """What a finished answer carries. `answer` is the checked text as stored (no footer);
    `tail` is the part of it the client has not received yet (all of it for a JSON answer)."""

    answer: str
    tail: str
    footer: str = ""
    citations: list[Citation] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    shaped: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The whole answer as the client shows it."""
        return self.answer + self.footer


class AnswerFlow:
    """The answer's text between the backend and the client, for one turn."""

    def __init__(self, state: Services, turn: Turn) -> None:
        self.state, self.turn = state, turn
        self.checker = CitationChecker(len(turn.passages))
        self.parts: list[str] = []

    @property
    def started(self) -> bool:
        """Whether any text has been let through yet."""
        return bool(self.parts)

    @cached_property
    def gate(self) -> SentenceGate:
        """The answer check (api/answercheck.py), on the passages the answer was made from."""
        from .chat import NOT_COVERED  # api.chat imports this module

        mode = self.state.settings.answer_check if self.turn.rag else "off"
        return SentenceGate(self.turn.passages, mode, NOT_COVERED)

    def feed(self, piece: str) -> str:
        """What of `piece` may go to the client now (a marker split across pieces waits, and
        a sentence until it is whole and checked)."""
        text = self.checker.feed(self.gate.feed(piece))
        if text:
            self.parts.append(text)
        return text

    def finish(self, *, sent: bool) -> Ending:
        """The rest of the answer and what goes with it. `sent`: what `feed` returned is already
        with the client (a stream), so attribution markers can only go at the end."""
        said = "".join(self.parts)
        tail = self.checker.feed(self.gate.finish()) + self.checker.finish()
        passages = [] if self.gate.refused else self.turn.passages
        marks = attribute_if_uncited(self.checker, said + tail, passages)
        if sent:
            if marks:
                tail += " " + "".join(f"[{n}]" for n in dict.fromkeys(n for _, n in marks))
            answer = said + tail
        else:
            answer = tail = insert_markers(said + tail, marks)
        citations = self.checker.citations(self.turn.passages)
        settings = self.state.settings
        footer = client_shapes.footer(settings, citations) if self.turn.footer else ""
        return Ending(
            answer,
            tail,
            footer,
            citations,
            source_list(citations, attributed=bool(marks)),
            shaped_citations(self.state, self.turn, answer + footer, citations),
        )


def attribute_if_uncited(
    checker: CitationChecker, answer: str, passages: list[Passage]
) -> list[tuple[int, int]]:
    """When the model cited nothing (small models often don't), cite the passages that support
    its sentences word for word; see citations.attribute."""
    if checker.cited or not passages:
        return []
    marks = attribute(answer, passages)
    checker.cite([n for _, n in marks])
    return marks


def source_list(citations: list[Citation], *, attributed: bool) -> list[dict[str, Any]]:
    return [
        {**c.as_source(), "cited_by": "attribution" if attributed else "model"} for c in citations
    ]


def shaped_citations(
    state: Services, turn: Turn, text: str, citations: list[Citation]
) -> dict[str, Any]:
    """The shapes `turn.shape` asks for: annotations over `text` (the whole answer as the
    client receives it) and the `citations` URL list; Open WebUI's source events."""
    if not turn.rag or not citations:
        return {}
    s, base = state.settings, turn.base_url
    out: dict[str, Any] = {}
    if turn.shape.annotations:
        out["annotations"] = client_shapes.url_annotations(s, base, text, citations, turn.passages)
        out["citations"] = client_shapes.url_list(s, base, turn.passages, citations)
    if turn.shape.events:
        out["events"] = client_shapes.source_events(s, base, turn.passages, citations)
    if turn.shape.openwebui_sources:
        events = client_shapes.source_events(s, base, turn.passages, citations)
        out["openwebui_sources"] = [e["data"] for e in events]
    return out


def extras(
    turn: Turn, sources: list[dict[str, Any]], shaped: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Hearth's own fields beside OpenAI's (clients ignore what they do not know), and the
    top-level `citations` URL list where the shape asks for it."""
    out: dict[str, Any] = {}
    if turn.conversation_id:
        out["conversation_id"] = turn.conversation_id
    if turn.rag:
        out["sources"] = sources
        out["search_query"] = turn.search_query
        if shaped and shaped.get("citations"):
            out["citations"] = shaped["citations"]
        if turn.shape.openwebui_sources:
            out["sources"] = (shaped or {}).get("openwebui_sources", [])
            out["hearth_sources"] = sources
    return out


def completion(
    turn: Turn, end: Ending, finish: str | None, usage: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON answer (`chat.completion`)."""
    message: dict[str, Any] = {"role": "assistant", "content": end.text, "refusal": None}
    if end.shaped.get("annotations"):
        message["annotations"] = end.shaped["annotations"]
    return {
        "id": turn.id,
        "object": "chat.completion",
        "created": turn.created,
        "model": turn.request.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish or "stop",
                "logprobs": None,
            }
        ],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        **extras(turn, end.sources, end.shaped),
    }


async def store(
    state: Services,
    turn: Turn,
    end: Ending,
    usage: dict[str, Any] | None,
    *,
    incomplete: bool = False,
) -> None:
    """Keep the turn in its conversation; `incomplete`: the backend failed mid-answer and
    `end.answer` is the part the client received."""
    usage = usage or {}
    answer = clean_text(end.answer)  # a model can emit a NUL; PostgreSQL cannot store one
    turn.log.update(
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        prompt=turn.question,
        answer=answer,
    )
    state.metrics.usage(usage)
    state.metrics.answer_seconds.labels("true" if turn.request.stream else "false").observe(
        time.perf_counter() - turn.started
    )
    if turn.task:  # a client's meta-request is not part of any conversation
        return
    # written with other requests' (api.store.writer), and written even if this task is
    # cancelled meanwhile (the client left): the shield keeps the write from being cancelled
    await asyncio.shield(
        state.writer.turn(
            NewTurn(
                turn.conversation_id,
                turn.user_id,
                turn.question,
                answer,
                end.sources,
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                incomplete,
            )
        )
    )
