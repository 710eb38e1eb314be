"""The streaming side of a chat turn: Server-Sent Events in OpenAI's `chat.completion.chunk`
shape, relayed token by token with citations checked on the fly.

Grounding and the backend's first token are awaited for up to STREAM_KEEPALIVE_S before the
response starts, so the usual failures (backend down, prompt too long) are JSON errors with the
right status. When they take longer, the stream starts with SSE comments as keep-alives (proxies
and clients would otherwise time out), and a later failure is an error event before `[DONE]`.
A client that goes away closes the backend stream, which makes vLLM abort the request (and the
turn is not stored).

A backend that fails mid-answer (killed, connection reset, read timeout) ends the stream at once:
the text already sent, a chunk with its sources (no finish_reason), an OpenAI-shaped error event
and `[DONE]`. The turn is stored with that partial text, its citations checked as usual, marked
incomplete; if no text had been sent yet there is nothing to keep, as for a failure before the
first token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from .chat import NOT_COVERED, Services, Turn, ground
from .errors import APIError, error_body
from .llm import LLMError
from .turn_end import AnswerFlow, extras, store
from .window import retry_on_overflow

KEEPALIVE = ": keep-alive\n\n"
Upstream = AsyncIterator[dict[str, Any]]
Started = tuple[dict[str, Any] | None, Upstream | None]


def sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


async def _start(state: Services, turn: Turn) -> Started:
    """Ground the turn and open the backend stream up to its first chunk."""
    await ground(state, turn)
    if turn.uncovered:
        return None, None

    async def open_stream() -> Started:
        upstream = state.llm.stream(turn.messages, **turn.params)
        try:
            return await anext(upstream), upstream
        except StopAsyncIteration:
            return None, upstream

    try:  # a prompt refused as too long is fitted again, once (api.window)
        return await retry_on_overflow(state, turn, open_stream, lambda: ground(state, turn))
    except LLMError as exc:
        state.metrics.llm_error(exc)
        raise APIError(exc.status, exc.message, code=exc.code) from exc


async def respond(state: Services, turn: Turn, headers: dict[str, str]) -> StreamingResponse:
    task = asyncio.create_task(_start(state, turn))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), state.settings.stream_keepalive_s)
    if task.done():
        first, upstream = task.result()  # an APIError here is a JSON error response
        body = _relay(state, turn, first, upstream)
    else:
        body = _after_keepalives(state, turn, task)
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _after_keepalives(
    state: Services, turn: Turn, task: asyncio.Task[Started]
) -> AsyncIterator[str]:
    try:
        while not task.done():
            yield KEEPALIVE
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), state.settings.stream_keepalive_s)
        try:
            first, upstream = task.result()
        except APIError as exc:
            yield sse(error_body(exc.status, exc.message, exc.param, exc.code))
            yield sse("[DONE]")
            return
        async for piece in _relay(state, turn, first, upstream):
            yield piece
    finally:
        if not task.done():  # the client went away while the turn was being grounded
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, APIError, LLMError):
                await task
            if not task.cancelled() and task.exception() is None:
                _, upstream = task.result()
                if upstream is not None:
                    await upstream.aclose()  # type: ignore[attr-defined]


async def _relay(
    state: Services, turn: Turn, first: dict[str, Any] | None, upstream: Upstream | None
) -> AsyncIterator[str]:
    base = {
        "id": turn.id,
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": turn.request.model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse({**base, "choices": [choice], **extra})

    flow = AnswerFlow(state, turn)
    finish: str | None = None
    usage: dict[str, Any] | None = None
    failed: LLMError | None = None
    yield chunk({"role": "assistant", "content": ""})
    try:
        if upstream is None:  # nothing relevant was found: say so, without the model
            yield chunk({"content": flow.feed(NOT_COVERED)})
        else:
            pending = [first] if first is not None else []
            async for item in _chain(pending, upstream):
                usage = item.get("usage") or usage
                for choice in item.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    piece = (choice.get("delta") or {}).get("content") or ""
                    first_text = not flow.started
                    text = flow.feed(piece)
                    if text:
                        if first_text:
                            state.metrics.ttft.observe(time.perf_counter() - turn.started)
                        yield chunk({"content": text})
    except LLMError as exc:  # the backend failed mid-answer: what was said is kept (below)
        state.metrics.llm_error(exc)
        failed = exc
    finally:
        if upstream is not None:
            await upstream.aclose()  # type: ignore[attr-defined]
    end = flow.finish(sent=True)
    rest = end.tail + end.footer
    last: dict[str, Any] = (
        {"annotations": end.shaped["annotations"]} if "annotations" in end.shaped else {}
    )
    if failed is not None:
        if end.answer.strip():  # the sources go before the error, at which OpenAI's SDK raises
            for event in end.shaped.get("events", []):
                yield sse({**base, "choices": [], "event": event})
            delta = {"content": rest} if rest else {}
            yield chunk({**delta, **last}, **extras(turn, end.sources, end.shaped))
        yield sse(error_body(failed.status, failed.message, code=failed.code))
        yield sse("[DONE]")
        if end.answer.strip():
            await store(state, turn, end, usage, incomplete=True)
        return
    if rest:
        yield chunk({"content": rest})
    # Open WebUI's source events: chunks without choices, which its parser emits and saves
    for event in end.shaped.get("events", []):
        yield sse({**base, "choices": [], "event": event})
    yield chunk(last, finish or "stop", **extras(turn, end.sources, end.shaped))
    options = turn.request.stream_options
    if options and options.include_usage:
        yield sse({**base, "choices": [], "usage": usage or _zero_usage()})
    yield sse("[DONE]")
    await store(state, turn, end, usage)


def _zero_usage() -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def _chain(pending: list[dict[str, Any]], upstream: Upstream) -> Upstream:
    for item in pending:
        yield item
    async for item in upstream:
        yield item
