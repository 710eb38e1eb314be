"""The streaming side of a chat turn: Server-Sent Events in OpenAI's `chat.completion.chunk`
shape, relayed token by token with citations checked on the fly.

Grounding and the backend's first token are awaited for up to STREAM_KEEPALIVE_S before the
response starts, so the usual failures (backend down, prompt too long) are JSON errors with the
right status. When they take longer, the stream starts with SSE comments as keep-alives (proxies
and clients would otherwise time out), and a later failure is an error event before `[DONE]`.
A client that goes away closes the backend stream, which makes vLLM abort the request (and the
turn is not stored); once the answer is whole (`[DONE]` sent), its turn is stored even if the
client leaves meanwhile (api.store.writer), and the stream ends when it is.

Plain chat (no retrieval) relays the backend's bytes as they come, a read at a time (api.sse),
and adds only its own `[DONE]` (the conversation's id is in the X-Conversation-Id header). A
grounded answer takes each read's tokens at once: one citation check and one event per read,
written with orjson.

A backend that fails mid-answer (killed, connection reset, read timeout) ends the stream at once:
the text already sent, a chunk with its sources (no finish_reason), an OpenAI-shaped error event
and `[DONE]`. The turn is stored with that partial text, its citations checked as usual, marked
incomplete; if no text had been sent yet there is nothing to keep, as for a failure before the
first token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .chat import NOT_COVERED, Services, Turn, ground
from .errors import APIError, error_body
from .llm import LLMError, parse_event
from .sse import Block, BrokenEvent, parse
from .turn_end import AnswerFlow, Ending, extras, store
from .window import retry_on_overflow

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
# the longest the end of a stream (done or abandoned) may take to close its body, its backend
# request and give its slot back (api.routes.chat._released)
CLOSE_S = 10.0
Upstream = AsyncIterator[Block]
Started = tuple[Block | None, Upstream | None]


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body however the response ends. Served with ASGI spec 2.4 (uvicorn says 2.3
    today), Starlette lets a client's disconnect raise out of `send` and leaves the body
    suspended at its `yield`, to be finalized whenever the garbage collector frees it: the
    backend request and the stream's slot would wait on that (api.routes.chat._released)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.move_on_after(CLOSE_S, shield=True):
                    await close()


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _start(state: Services, turn: Turn) -> Started:
    """Ground the turn and open the backend stream up to its first chunk."""
    await ground(state, turn)
    if turn.uncovered:
        return None, None

    async def open_stream() -> Started:
        options = turn.request.stream_options
        asked = bool(options and options.include_usage)
        upstream = state.llm.stream_blocks(turn.messages, keep_usage=asked, **turn.params)
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
    await asyncio.wait((task,), timeout=state.settings.stream_keepalive_s)  # never cancels it
    if task.done():
        first, upstream = task.result()  # an APIError here is a JSON error response
        body = _relay(state, turn, first, upstream)

    else:
        body = _after_keepalives(state, turn, task)
    return ClosingStreamingResponse(
        body,
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _after_keepalives(
    state: Services, turn: Turn, task: asyncio.Task[Started]
) -> AsyncIterator[bytes]:
    try:
        while not task.done():
            yield KEEPALIVE
            await asyncio.wait((task,), timeout=state.settings.stream_keepalive_s)
        try:
            first, upstream = task.result()
        except APIError as exc:
            yield sse(error_body(exc.status, exc.message, exc.param, exc.code))
            yield DONE
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


def _relay(
    state: Services, turn: Turn, first: Block | None, upstream: Upstream | None
) -> AsyncIterator[bytes]:
    if upstream is not None and not turn.rag:
        return _passthrough(state, turn, first, upstream)
    return _grounded(state, turn, first, upstream)


async def _passthrough(
    state: Services, turn: Turn, first: Block | None, upstream: Upstream
) -> AsyncIterator[bytes]:
    """Plain chat: the backend's events as it sent them; the answer's text is read from them
    once the stream is over, for the conversation and the request log."""
    said: list[bytes] = []
    usage: dict[str, Any] | None = None
    failed: LLMError | None = None
    timed = False

    def take(block: Block) -> bytes:
        nonlocal usage, timed
        if block.content and not timed:
            state.metrics.ttft.observe(time.perf_counter() - turn.started)
            timed = True
        usage = block.usage or usage
        said.extend(block.data)
        return block.raw

    try:  # no generator in between (_chain): this runs once per read of the backend
        if first is not None and (raw := take(first)):
            yield raw
        async for block in upstream:
            if raw := take(block):
                yield raw
    except LLMError as exc:  # the backend failed mid-answer: what was said is kept (below)
        state.metrics.llm_error(exc)
        failed = exc
    finally:
        await upstream.aclose()  # type: ignore[attr-defined]
    end = Ending(_text(said), "")
    options = turn.request.stream_options
    if failed is None and options and options.include_usage and usage is None:
        yield sse({**_base(turn), "choices": [], "usage": _zero_usage()})
    if failed is not None:
        yield sse(error_body(failed.status, failed.message, code=failed.code))
    yield DONE
    if failed is None or end.answer.strip():
        await store(state, turn, end, usage, incomplete=failed is not None)


def _text(data: list[bytes]) -> str:
    """The answer text in a plain stream's events (parsed once, at its end)."""
    parts: list[str] = []
    for item in data:
        try:
            chunk = parse(item)
        except BrokenEvent:
            continue
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str):
                    parts.append(content)
    return "".join(parts)


def _base(turn: Turn) -> dict[str, Any]:
    return {
        "id": turn.id,
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": turn.request.model,
    }


async def _grounded(
    state: Services, turn: Turn, first: Block | None, upstream: Upstream | None
) -> AsyncIterator[bytes]:
    """A grounded answer: each read's tokens checked (citations) and sent as one event."""
    base = _base(turn)
    # an event carrying text is this around the text's JSON: no dict is built per read
    pre = b"data: " + orjson.dumps(base)[:-1] + b',"choices":[{"index":0,"delta":{"content":'
    post = b'},"finish_reason":null,"logprobs":null}]}\n\n'

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse({**base, "choices": [choice], **extra})

    def content(text: str) -> bytes:
        return pre + orjson.dumps(text) + post

    flow = AnswerFlow(state, turn)
    finish: str | None = None
    usage: dict[str, Any] | None = None
    failed: LLMError | None = None
    timed = False
    yield chunk({"role": "assistant", "content": ""})
    try:
        if upstream is None:  # nothing relevant was found: say so, without the model
            yield content(flow.feed(NOT_COVERED))
        else:
            async for block in _chain(first, upstream):
                usage = block.usage or usage
                pieces: list[str] = []
                for data in block.data:
                    item = parse_event(data)
                    for choice in item.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            pieces.append(piece)
                if not pieces:
                    continue
                text = flow.feed("".join(pieces))
                if text:
                    if not timed:  # the first text the client sees (the gate may hold some)
                        state.metrics.ttft.observe(time.perf_counter() - turn.started)
                        timed = True
                    yield content(text)
    except LLMError as exc:  # the backend failed mid-answer: what was said is kept (below)
        state.metrics.llm_error(exc)
        failed = exc
    finally:
        if upstream is not None:
            await upstream.aclose()  # type: ignore[attr-defined]
    end = flow.finish(sent=True)
    rest = end.tail + end.footer
    if end.tail and not timed:  # all of the text was held to the end (or is the refusal)
        state.metrics.ttft.observe(time.perf_counter() - turn.started)
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
        yield DONE
        if end.answer.strip():
            await store(state, turn, end, usage, incomplete=True)
        return
    if rest:
        yield content(rest)
    # Open WebUI's source events: chunks without choices, which its parser emits and saves
    for event in end.shaped.get("events", []):
        yield sse({**base, "choices": [], "event": event})
    yield chunk(last, finish or "stop", **extras(turn, end.sources, end.shaped))
    options = turn.request.stream_options
    if options and options.include_usage:
        yield sse({**base, "choices": [], "usage": usage or _zero_usage()})
    yield DONE
    await store(state, turn, end, usage)


def _zero_usage() -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def _chain(first: Block | None, upstream: Upstream) -> Upstream:
    if first is not None:
        yield first
    async for block in upstream:
        yield block
