"""One chat turn: open it (model, conversation, history), ground it (rewrite the follow-up,
retrieve, build the prompt within the context window), answer it; its end (check citations,
attribute, sources, footer, store) is api.turn_end, shared with the stream.

`open_turn` is quick and runs before any response byte is sent; `ground` may take a while, so the
streaming path (api.chat_stream) runs it under keep-alives.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from core.embedder import Embedder
from core.settings import Settings
from core.types import Passage

from . import client_shapes
from .client_shapes import Shape
from .errors import APIError
from .llm import LLMClient, LLMError
from .metrics import Metrics
from .models import RAG_MODEL, ModelChoice, parse_model
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
from .store import access
from .store.accounts import User
from .store.conversations import Turn as StoredTurn
from .store.conversations import new_conversation_id, open_conversation
from .store.writer import WriteBehind
from .tasks import is_task, task_answer, task_budget
from .textguard import clean_text
from .tokenizer import load_counter
from .turn_end import AnswerFlow, completion, store
from .window import answer_budget, retry_on_overflow

INLINE_CHARS = 2000  # a plain prompt this short is counted on the event loop

NOT_COVERED = (
    "I could not find this in your documents, so I will not guess. Try rephrasing the "
    "question, or check that the documents that answer it are indexed."
)


class Services(Protocol):
    """What a chat turn uses of the app's long-lived resources (api.state.AppState is one)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def pool(self) -> AsyncConnectionPool: ...
    @property
    def embedder(self) -> Embedder: ...
    @property
    def llm(self) -> LLMClient: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def writer(self) -> WriteBehind: ...


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
    readable: tuple[str, ...]  # what this user may read, as of this request (when it matters)
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
    state: Services,
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
    earlier = req.messages[:last_user]
    cid, stored = "", list[StoredTurn]()
    readable: tuple[str, ...] = ()
    plain = req.model == state.settings.llm_model and req.model != RAG_MODEL
    continues = conversation_id or any(m.role == "user" for m in earlier)
    if plain and (task or not continues):
        # plain chat that continues nothing stored reads nothing: no database before the backend
        choice = parse_model(req.model, state.settings, [])
        if not task:
            cid = new_conversation_id()
    else:
        async with state.pool.connection() as conn:
            readable = await access.readable(conn, user)
            choice = parse_model(req.model, state.settings, list(readable))
            if not task:  # a task is never stored, so it neither opens nor continues one
                earlier_turns = [(m.role, m.text()) for m in earlier]
                cid, stored = await open_conversation(
                    conn, user.id, conversation_id, list(readable), earlier_turns
                )
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


async def ground(state: Services, turn: Turn) -> None:
    """Rewrite, retrieve and build the prompt for `turn` (raises APIError when it cannot fit)."""
    s = state.settings
    window = await state.llm.context_window() or s.llm_max_model_len
    turn.window = window = min(window, turn.window or window)  # lower on a retry (api.window)
    asked = turn.request.max_completion_tokens or turn.request.max_tokens
    if turn.task:
        asked = task_budget(asked, s.llm_max_tokens)
    max_tokens = answer_budget(asked, s.llm_max_tokens, window)
    counter = load_counter(s.tokenizer_file)  # loaded by the app's start-up: no wait here
    turn.params = {**turn.request.backend_params(), "max_tokens": max_tokens}
    if turn.rag and s.answer_temperature != "backend":  # grounded: greedy unless asked
        turn.params.setdefault("temperature", s.answer_temperature)
    try:
        # a message too long for any prompt is refused before it costs a search or a count
        check_length(counter, window, max_tokens, turn.question, turn.client_system)
        # counting tokens is CPU work: a long prompt's on a thread, so other requests go on
        # meanwhile; a short one's takes less time than the trip to a thread and back
        if not turn.rag:
            build = functools.partial(
                plain_prompt,
                turn.client_system,
                turn.history,
                turn.question,
                counter=counter,
                context_tokens=window,
                max_answer_tokens=max_tokens,
            )
            size = len(turn.question) + len(turn.client_system)
            size += sum(len(t) for _, t in turn.history)
            turn.messages = build() if size <= INLINE_CHARS else await asyncio.to_thread(build)
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
            best_last=s.passage_order == "best_last",
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


async def complete(state: Services, turn: Turn) -> dict[str, Any]:
    flow = AnswerFlow(state, turn)
    if turn.uncovered:
        flow.feed(NOT_COVERED)
        end = flow.finish(sent=False)
        await store(state, turn, end, None)
        return completion(turn, end, "stop", None)
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
    text = clean_text((choice.get("message") or {}).get("content") or "")
    if turn.task:  # in the JSON shape the client's task template asked for (api.tasks)
        text = task_answer(turn.request, text)
    flow.feed(text)
    end = flow.finish(sent=False)
    usage = resp.get("usage")
    await store(state, turn, end, usage)
    return completion(turn, end, choice.get("finish_reason"), usage)
