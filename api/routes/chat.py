"""POST /v1/chat/completions in OpenAI's shape, answered from the caller's documents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse

from .. import chat
from ..auth import CurrentUser
from ..schemas import ChatRequest
from ..state import State

router = APIRouter(prefix="/v1")


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatRequest,
    state: State,
    user: CurrentUser,
    x_conversation_id: str | None = Header(default=None),
    x_hearth_footer: str | None = Header(default=None),
) -> Any:
    conversation_id = x_conversation_id or (body.metadata or {}).get("conversation_id")
    footer = (x_hearth_footer or "on").lower() not in ("off", "0", "false", "no")
    turn = await chat.prepare_turn(state, user, body, conversation_id, footer)
    headers = {"X-Conversation-Id": turn.conversation_id}
    if body.stream:
        body_iter = await chat.open_stream(state, turn)
        return StreamingResponse(
            body_iter,
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return JSONResponse(await chat.complete(state, turn), headers=headers)
