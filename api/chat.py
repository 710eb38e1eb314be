"""One chat turn: open it (model, conversation, history), ground it (rewrite the follow-up,
retrieve, build the prompt within the context window), answer it, check citations, store it.

`open_turn` is quick and runs before any response byte is sent; `ground` may take a while, so the
streaming path (api.chat_stream) runs it under keep-alives.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from core.types import Citation, Passage

from . import client_shapes
from .citations import CitationChecker, attribute, insert_markers
from .client_shapes import Shape
from .errors import APIError
from .llm import LLMError
from .models import ModelChoice, parse_model
from .prompt import (
    DEFAULT_SYSTEM_PROMPT,
    PromptTooLong,
    build_prompt,
    check_length,
    plain_prompt,
)
from .rewrite import rewrite_query
from .schemas import ChatRequest
from .search import SearchFilters, SearchRequest, run_search
from .state import AppState
from .store import access
from .store.accounts import User
from .store.conversations import Turn as StoredTurn
from .store.conversations import add_turn, open_conversation
from .tasks import is_task, task_budget
from .textguard import clean_text
from .tokenizer import load_counter
from .window import answer_budget, retry_on_overflow

NOT_COVERED = (
    "I could not find this in your documents, so I will not guess. Try rephrasing the "
    "question, or check that the documents that answer it are indexed."
)


@dataclass
class Turn:
    """A request, and once grounded, everything decided before the backend is called."""

    request: ChatRequest
    user_id: int
    conversation_id: str
    choice: ModelChoice
    question: str
    history: list[tuple[str, str]]
    client_system: str
    shape: Shape  # how the citations travel besides `sources` (api.client_shapes)
    readable: tuple[str, ...]  # the collections this user may read, as of this request
    base_url: str = ""  # where citation URLs point (PUBLIC_URL or the request's base URL)
    task: bool = False  # a client's meta-request (title, tags...): plain chat (api.tasks)
    search_query: str = ""
    rewritten: str = "none"  # how the search query was made: none, llm, fallback, echo
    messages: list[dict[str, str]] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    uncovered: bool = False  # nothing relevant was found: answer NOT_COVERED, skip the LLM
    window: int | None = None  # the context window it was fitted to (api.window lowers it)
    log: dict[str, Any] = field(default_factory=dict)  # this request's request-log entry
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)  # for latency metrics

    @property
    def rag(self) -> bool:
        return self.choice.rag and not self.task

    @property
    def footer(self) -> bool:
        return self.shape.footer and self.rag


async def open_turn(
    state: AppState,
    user: User,
    req: ChatRequest,
    conversation_id: str | None,
    shape: Shape,
    base_url: str = "",
) -> Turn:
    if req.n is not None and req.n > 1:
        raise APIError(400, "only n=1 is supported", param="n", code="unsupported_value")
    last_user = next(
        (i for i in range(len(req.messages) - 1, -1, -1) if req.messages[i].role == "user"), None
    )
    if last_user is None or not req.messages[last_user].text().strip():
        raise APIError(400, "messages must contain a user message with text", param="messages")
    task = is_task(req)
    async with state.pool.connection() as conn:
        readable = await access.readable(conn, user)
        choice = parse_model(req.model, state.settings, list(readable))
        cid, stored = "", list[StoredTurn]()
        if not task:  # a task is never stored, so it neither opens nor continues one
            earlier_turns = [(m.role, m.text()) for m in req.messages[:last_user]]
            cid, stored = await open_conversation(
                conn, user.id, conversation_id, list(readable), earlier_turns
            )
    earlier = req.messages[:last_user]
    if stored:
        history = [(t.role, t.content) for t in stored if t.role in ("user", "assistant")]
    else:
        history = [(m.role, m.text()) for m in earlier if m.role in ("user", "assistant")]
    # an earlier answer as the client sends it back carries Hearth's footer and markers
    history = [
        (role, client_shapes.clean_answer(text) if role == "assistant" else text)
        for role, text in history
    ]
    client_system = "\n\n".join(
        m.text() for m in req.messages if m.role in ("system", "developer") and m.text().strip()
    )
    return Turn(
        req,
        user.id,
        cid,
        choice,
        req.messages[last_user].text().strip(),
        history,
        client_system,
        shape,
        readable,
        base_url,
        task,
    )


async def ground(state: AppState, turn: Turn) -> None:
    """Rewrite, retrieve and build the prompt for `turn` (raises APIError when it cannot fit)."""
    s = state.settings
    window = await state.llm.context_window() or s.llm_max_model_len
    turn.window = window = min(window, turn.window or window)  # lower on a retry (api.window)
    asked = turn.request.max_completion_tokens or turn.request.max_tokens
    if turn.task:
        asked = task_budget(asked, s.llm_max_tokens)
    max_tokens = answer_budget(asked, s.llm_max_tokens, window)
    counter = await asyncio.to_thread(load_counter, s.tokenizer_file)
    turn.params = {**turn.request.backend_params(), "max_tokens": max_tokens}
    try:
        # a message too long for any prompt is refused before it costs a search or a count
        check_length(counter, window, max_tokens, turn.question, turn.client_system)
        # counting tokens is CPU work: on a thread, so other requests go on meanwhile
        if not turn.rag:
            turn.messages = await asyncio.to_thread(
                plain_prompt,
                turn.client_system,
                turn.history,
                turn.question,
                counter=counter,
                context_tokens=window,
                max_answer_tokens=max_tokens,
            )
            return
        turn.search_query, turn.rewritten = turn.question, "none"
        if s.query_rewrite and turn.history:
            turn.search_query, turn.rewritten = await rewrite_query(
                state.llm, turn.history, turn.question
            )
        filters = (
            SearchFilters(collections=[turn.choice.collection]) if turn.choice.collection else None
        )
        searched = time.perf_counter()
        found = await run_search(
            state.pool,
            state.embedder,
            s,
            SearchRequest(query=turn.search_query[:4000], filters=filters),
            readable=turn.readable,
        )
        state.metrics.retrieval("chat", searched)
        turn.passages = relevant(found, s.relevance_threshold)
        turn.uncovered = not turn.passages
        system = s.system_prompt or DEFAULT_SYSTEM_PROMPT
        if turn.client_system:
            system += "\n\n" + turn.client_system
        prompt = await asyncio.to_thread(
            build_prompt,
            turn.question,
            turn.passages,
            turn.history,
            counter=counter,
            context_tokens=window,
            max_answer_tokens=max_tokens,
            system_prompt=system,
        )
        turn.messages, turn.passages = prompt.messages, prompt.passages
    except PromptTooLong as exc:
        raise APIError(400, str(exc), param="messages", code="context_length_exceeded") from exc


def relevant(passages: list[Passage], threshold: float) -> list[Passage]:
    """The passages worth giving the model. When even the closest one is less similar to the
    question than `threshold`, the documents do not cover it: none are. Passages the dense leg
    did not score (found by words alone) are kept."""
    if threshold <= 0 or not passages:
        return passages
    sims = [p.similarity for p in passages if p.similarity is not None]
    if sims and max(sims) < threshold:
        return []
    return [p for p in passages if p.similarity is None or p.similarity >= threshold]


def completion(
    turn: Turn,
    text: str,
    finish: str | None,
    usage: dict[str, Any] | None,
    sources: list[dict[str, Any]],
    shaped: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if shaped and shaped.get("annotations"):
        message["annotations"] = shaped["annotations"]
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
        **extras(turn, sources, shaped),
    }


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


def shaped_citations(
    state: AppState, turn: Turn, text: str, citations: list[Citation]
) -> dict[str, Any]:
    """The shapes `turn.shape` asks for: annotations over `text` (the whole answer as the
    client receives it) and the `citations` URL list; Open WebUI's source events."""
    if not turn.rag or not citations:
        return {}
    s, base = state.settings, turn.base_url
    out: dict[str, Any] = {}
    if turn.shape.annotations:
        out["annotations"] = client_shapes.url_annotations(s, base, text, citations)
        out["citations"] = client_shapes.url_list(base, turn.passages, citations)
    if turn.shape.events:
        out["events"] = client_shapes.source_events(s, base, turn.passages, citations)
    if turn.shape.openwebui_sources:
        events = client_shapes.source_events(s, base, turn.passages, citations)
        out["openwebui_sources"] = [e["data"] for e in events]
    return out


async def complete(state: AppState, turn: Turn) -> dict[str, Any]:
    if turn.uncovered:
        await store(state, turn, NOT_COVERED, [], None)
        return completion(turn, NOT_COVERED, "stop", None, [])
    try:
        resp = await retry_on_overflow(
            state,
            turn,
            lambda: state.llm.complete(turn.messages, **turn.params),
            lambda: ground(state, turn),
        )
    except LLMError as exc:  # nothing is stored: no part of a JSON answer cut short is usable
        state.metrics.llm_error(exc)
        raise APIError(exc.status, exc.message, code=exc.code) from exc
    choice = (resp.get("choices") or [{}])[0]
    checker = CitationChecker(len(turn.passages))
    answer = checker.check(clean_text((choice.get("message") or {}).get("content") or ""))
    marks = attribute_if_uncited(checker, answer, turn.passages)
    answer = insert_markers(answer, marks)
    citations = checker.citations(turn.passages)
    sources = source_list(citations, attributed=bool(marks))
    usage = resp.get("usage")
    await store(state, turn, answer, sources, usage)
    text = answer + (client_shapes.footer(state.settings, citations) if turn.footer else "")
    shaped = shaped_citations(state, turn, text, citations)
    return completion(turn, text, choice.get("finish_reason"), usage, sources, shaped)


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


async def store(
    state: AppState,
    turn: Turn,
    answer: str,
    sources: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    *,
    incomplete: bool = False,
) -> None:
    """Keep the turn in its conversation; `incomplete`: the backend failed mid-answer and
    `answer` is the part the client received."""
    usage = usage or {}
    answer = clean_text(answer)  # a model can emit a NUL; PostgreSQL cannot store one
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
    async with state.pool.connection() as conn:
        await add_turn(
            conn,
            turn.conversation_id,
            turn.user_id,
            turn.question,
            answer,
            sources,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            incomplete,
        )
