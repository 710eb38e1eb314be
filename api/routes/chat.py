"""POST /v1/chat/completions in OpenAI's shape, answered from the caller's documents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from .. import chat, chat_stream
from ..auth import CurrentUser
from ..schemas import ChatRequest
from ..state import State

router = APIRouter(prefix="/v1")

_OFF = ("off", "0", "false", "no")


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatRequest,
    state: State,
    user: CurrentUser,
    x_conversation_id: str | None = Header(default=None),
    x_hearth_footer: str | None = Header(default=None),
) -> Any:
    conversation_id = x_conversation_id or (body.metadata or {}).get("conversation_id")
    footer = state.settings.sources_footer
    if body.sources_footer is not None:
        footer = body.sources_footer
    if x_hearth_footer is not None:
        footer = x_hearth_footer.strip().lower() not in _OFF
    turn = await chat.open_turn(state, user, body, conversation_id, footer)
    headers = {"X-Conversation-Id": turn.conversation_id}
    if body.stream:
        return await chat_stream.respond(state, turn, headers)
    await chat.ground(state, turn)
    return JSONResponse(await chat.complete(state, turn), headers=headers)
