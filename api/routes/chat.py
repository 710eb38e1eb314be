"""POST /v1/chat/completions in OpenAI's shape, answered from the caller's documents."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .. import chat, chat_stream, client_shapes, timing
from ..auth import limit_key
from ..errors import APIError
from ..schemas import ChatRequest
from ..state import AppState, State

router = APIRouter(prefix="/v1")

_OFF = ("off", "0", "false", "no")
_HEADERS = ("x-conversation-id", "x-hearth-footer", "x-hearth-citations")


def _header(name: str) -> dict[str, Any]:
    """An optional string header in the OpenAPI schema, as a `Header()` parameter would be."""
    title = "-".join(part.capitalize() for part in name.split("-"))
    string_or_null = [{"type": "string"}, {"type": "null"}]
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"anyOf": string_or_null, "title": title},
    }


# The three headers are read from request.headers: as Header() parameters FastAPI validates each
# on every request (~0.1-0.4 ms a chat); the schema still documents them (openapi_extra).
@router.post(
    "/chat/completions",
    response_model=None,
    openapi_extra={"parameters": [_header(n) for n in _HEADERS]},
)
async def chat_completions(
    request: Request,
    body: ChatRequest,
    state: State,
    user: timing.TimedUser,
) -> Any:
    sent = request.headers
    x_conversation_id = sent.get("x-conversation-id")
    x_hearth_footer = sent.get("x-hearth-footer")
    x_hearth_citations = sent.get("x-hearth-citations")
    given = (body.metadata or {}).get("conversation_id")
    if given is not None and not isinstance(given, str):
        raise APIError(
            400,
            "metadata.conversation_id must be a string: the id of one of your conversations.",
            param="metadata.conversation_id",
        )
    conversation_id = x_conversation_id or given
    footer = state.settings.sources_footer
    if body.sources_footer is not None:
        footer = body.sources_footer
    if x_hearth_footer is not None:
        footer = x_hearth_footer.strip().lower() not in _OFF
    style: str = state.settings.citation_style
    if x_hearth_citations is not None:
        style = x_hearth_citations.strip().lower()
        if style not in client_shapes.STYLES:
            raise APIError(
                400,
                f"X-Hearth-Citations must be one of {', '.join(client_shapes.STYLES)}.",
                param="X-Hearth-Citations",
            )
    client = client_shapes.detect_client(request.headers, body)
    shape = client_shapes.resolve(style, client, stream=body.stream, footer_allowed=footer)
    base = client_shapes.base_url(state.settings, str(request.base_url))
    timings = timing.current()  # the stages: a non-streamed answer's Server-Timing header
    with timings.stage("open"):
        turn = await chat.open_turn(state, user, body, conversation_id, shape, base)
    entry = getattr(request.state, "log", None)
    if isinstance(entry, dict):
        turn.log = entry
    turn.log["model"] = body.model
    headers = {"X-Conversation-Id": turn.conversation_id} if turn.conversation_id else {}
    if body.stream:
        key = limit_key(user)
        if not await state.limiter.open_stream(key):
            raise APIError(
                429,
                f"Too many answers streaming at once for this token (at most "
                f"{state.settings.max_streams_per_token}); wait for one to finish.",
                code="too_many_streams",
                headers={"Retry-After": "1"},
            )
        try:
            response = await chat_stream.respond(state, turn, headers)
        except BaseException:
            await state.limiter.close_stream(key)
            raise
        response.body_iterator = _released(response.body_iterator, state, key)
        return response
    with timings.stage("ground"):
        await chat.ground(state, turn)
    with timings.stage("answer"):
        answer = await chat.complete(state, turn)
    return JSONResponse(answer, headers={**headers, **timing.header_for(user)})


async def _released(body: AsyncIterable[Any], state: AppState, key: str) -> AsyncIterator[Any]:
    """The stream's body; its slot is given back however it ends (done, failed, client gone).

    A client that goes away cancels the response's task (Starlette's disconnect listener), and
    under a cancelled scope every await of this `finally` was cancelled in turn: the release,
    a Redis round trip, could be cut before its DECR was sent, and the token kept a stream slot
    for the key's hour (seen in CI: a second stream refused for 240 s). Shielded now, with a
    deadline; and the inner stream is closed here (its backend request with it) instead of
    whenever the garbage collector finalizes it."""
    try:
        async for piece in body:
            yield piece
    finally:
        with anyio.move_on_after(chat_stream.CLOSE_S, shield=True):
            try:
                close = getattr(body, "aclose", None)
                if close is not None:
                    await close()
            finally:
                timing.log_stages("chat stream")
                await state.limiter.close_stream(key)
