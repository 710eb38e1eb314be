"""GET /v1/models: `hearth` (answers from your documents) and the backend model (plain chat)."""

from __future__ import annotations

import time

from fastapi import APIRouter

from ..auth import CurrentUser
from ..state import State

router = APIRouter(prefix="/v1")

RAG_MODEL = "hearth"
_CREATED = int(time.time())


@router.get("/models")
async def list_models(state: State, user: CurrentUser) -> dict[str, object]:
    data = [
        {"id": RAG_MODEL, "object": "model", "created": _CREATED, "owned_by": "hearth"},
        {
            "id": state.settings.llm_model,
            "object": "model",
            "created": _CREATED,
            "owned_by": "backend",
        },
    ]
    return {"object": "list", "data": data}
