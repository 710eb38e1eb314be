"""One chat turn: retrieve, build the grounded prompt, call the LLM, check citations, store."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from core.types import Citation, Passage

from .citations import CitationChecker, attribute, insert_markers, sources_footer
from .errors import APIError, error_body
from .llm import LLMError
from .prompt import PromptTooLong, build_prompt
from .routes.models import RAG_MODEL
from .schemas import ChatRequest
from .search import SearchRequest, run_search
from .state import AppState
from .store.accounts import User
from .store.conversations import add_turn, open_conversation


@dataclass
class Turn:
    """Everything decided before the backend is called."""

    request: ChatRequest
    user_id: int
    conversation_id: str
    question: str
    messages: list[dict[str, str]]
    passages: list[Passage]
    params: dict[str, Any]
    footer: bool
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))


async def prepare_turn(
    state: AppState, user: User, req: ChatRequest, conversation_id: str | None, footer: bool
) -> Turn:
    s = state.settings
    if req.n is not None and req.n > 1:
        raise APIError(400, "only n=1 is supported", param="n", code="unsupported_value")
    rag = req.model == RAG_MODEL
    if not rag and req.model != s.llm_model:
        raise APIError(
            404,
            f"The model '{req.model}' does not exist; GET /v1/models lists them.",
            param="model",
            code="model_not_found",
        )
    last_user = next(
        (i for i in range(len(req.messages) - 1, -1, -1) if req.messages[i].role == "user"), None
    )
    if last_user is None or not req.messages[last_user].text().strip():
        raise APIError(400, "messages must contain a user message with text", param="messages")
    question = req.messages[last_user].text().strip()

    async with state.pool.connection() as conn:
        cid, stored = await open_conversation(conn, user.id, conversation_id)
    if stored:
        history = [(t.role, t.content) for t in stored if t.role in ("user", "assistant")]
    else:
        history = [
            (m.role, m.text()) for m in req.messages[:last_user] if m.role in ("user", "assistant")
        ]

    passages: list[Passage] = []
    if rag:
        passages = await run_search(
            state.pool, state.embedder, s, SearchRequest(query=question[:4000])
        )
    max_tokens = req.max_completion_tokens or req.max_tokens or s.llm_max_tokens
    try:
        if rag:
            prompt = build_prompt(
                question,
                passages,
                history,
                context_tokens=s.llm_max_model_len,
                max_answer_tokens=max_tokens,
            )
            messages, passages = prompt.messages, prompt.passages
        else:
            messages = [{"role": r, "content": t} for r, t in history]
            messages.append({"role": "user", "content": question})
    except PromptTooLong as exc:
        raise APIError(400, str(exc), param="messages", code="context_length_exceeded") from exc
    params = {**req.backend_params(), "max_tokens": max_tokens}
    return Turn(req, user.id, cid, question, messages, passages, params, footer and rag)


def _completion(
    turn: Turn,
    text: str,
    finish: str | None,
    usage: dict[str, Any] | None,
    sources: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "id": turn.id,
        "object": "chat.completion",
        "created": turn.created,
        "model": turn.request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish or "stop",
                "logprobs": None,
            }
        ],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "sources": sources,
        "conversation_id": turn.conversation_id,
    }


async def complete(state: AppState, turn: Turn) -> dict[str, Any]:
    try:
        resp = await state.llm.complete(turn.messages, **turn.params)
    except LLMError as exc:
        raise APIError(exc.status, exc.message, code=exc.code) from exc
    choice = (resp.get("choices") or [{}])[0]
    checker = CitationChecker(len(turn.passages))
    answer = checker.check((choice.get("message") or {}).get("content") or "")
    marks = _attribute_if_uncited(checker, answer, turn.passages)
    answer = insert_markers(answer, marks)
    citations = checker.citations(turn.passages)
    sources = _sources(citations, attributed=bool(marks))
    usage = resp.get("usage")
    await _store(state, turn, answer, sources, usage)
    text = answer + (sources_footer(citations) if turn.footer else "")
    return _completion(turn, text, choice.get("finish_reason"), usage, sources)


def _attribute_if_uncited(
    checker: CitationChecker, answer: str, passages: list[Passage]
) -> list[tuple[int, int]]:
    """When the model cited nothing (small models often don't), cite the passages that support
    its sentences word for word; see citations.attribute."""
    if checker.cited or not passages:
        return []
    marks = attribute(answer, passages)
    checker.cite([n for _, n in marks])
    return marks


def _sources(citations: list[Citation], *, attributed: bool) -> list[dict[str, Any]]:
    return [
        {**c.as_source(), "cited_by": "attribution" if attributed else "model"} for c in citations
    ]


async def _store(
    state: AppState,
    turn: Turn,
    answer: str,
    sources: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> None:
    usage = usage or {}
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
        )


def _sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


async def open_stream(state: AppState, turn: Turn) -> AsyncIterator[str]:
    """Start the backend stream now (so a dead backend is a JSON error with the right status),
    and return the SSE body that relays it with citations checked on the fly."""
    upstream = state.llm.stream(turn.messages, **turn.params)
    try:
        first = await anext(upstream)
    except StopAsyncIteration:
        first = None
    except LLMError as exc:
        raise APIError(exc.status, exc.message, code=exc.code) from exc
    return _relay(state, turn, first, upstream)


async def _relay(
    state: AppState,
    turn: Turn,
    first: dict[str, Any] | None,
    upstream: AsyncIterator[dict[str, Any]],
) -> AsyncIterator[str]:
    checker = CitationChecker(len(turn.passages))
    base = {
        "id": turn.id,
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": turn.request.model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return _sse(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
                **extra,
            }
        )

    parts: list[str] = []
    finish: str | None = None
    usage: dict[str, Any] | None = None
    yield chunk({"role": "assistant", "content": ""})

    async def pieces() -> AsyncIterator[dict[str, Any]]:
        if first is not None:
            yield first
        async for item in upstream:
            yield item

    try:
        async for item in pieces():
            usage = item.get("usage") or usage
            for choice in item.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                text = checker.feed((choice.get("delta") or {}).get("content") or "")
                if text:
                    parts.append(text)
                    yield chunk({"content": text})
    except LLMError as exc:
        yield _sse(error_body(exc.status, exc.message, code=exc.code))
        yield _sse("[DONE]")
        return
    tail = checker.finish()
    marks = _attribute_if_uncited(checker, "".join(parts) + tail, turn.passages)
    if marks:  # the text is already sent: the markers go at its end
        tail += " " + "".join(f"[{n}]" for n in dict.fromkeys(n for _, n in marks))
    parts.append(tail)
    citations = checker.citations(turn.passages)
    sources = _sources(citations, attributed=bool(marks))
    footer = sources_footer(citations) if turn.footer else ""
    if tail + footer:
        yield chunk({"content": tail + footer})
    yield chunk({}, finish or "stop", sources=sources, conversation_id=turn.conversation_id)
    include_usage = bool(turn.request.stream_options and turn.request.stream_options.include_usage)
    if include_usage:
        yield _sse({**base, "choices": [], "usage": usage or {}})
    yield _sse("[DONE]")
    await _store(state, turn, "".join(parts), sources, usage)
