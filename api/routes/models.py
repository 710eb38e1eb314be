"""GET /v1/models: `hearth`, `hearth:<collection>` for each collection (answers from your
documents) and the backend's model (plain chat), each with the context window it has."""

from __future__ import annotations

import time

from fastapi import APIRouter

from ..auth import CurrentUser
from ..errors import APIError
from ..models import RAG_MODEL, model_card
from ..state import State
from ..store import access

router = APIRouter(prefix="/v1")

_CREATED = int(time.time())


@router.get("/models")
async def list_models(state: State, user: CurrentUser) -> dict[str, object]:
    window = state.llm.max_model_len or state.settings.llm_max_model_len
    async with state.pool.connection() as conn:
        names = await access.readable(conn, user)
    data = [model_card(RAG_MODEL, "hearth", _CREATED, max_model_len=window)]
    data += [
        model_card(f"{RAG_MODEL}:{name}", "hearth", _CREATED, max_model_len=window)
        for name in names
    ]
    data.append(model_card(state.settings.llm_model, "backend", _CREATED, max_model_len=window))
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, state: State, user: CurrentUser) -> dict[str, object]:
    listed = await list_models(state, user)
    for card in listed["data"]:  # type: ignore[attr-defined]
        if card["id"] == model_id:
            return dict(card)
    raise APIError(
        404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
    )
