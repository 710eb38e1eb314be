"""POST /v1/search: retrieval only — the passages the chat API would give the model, with
their scores and where they come from."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from ..auth import CurrentUser
from ..search import SearchRequest, passage_json, run_search
from ..state import State
from ..store import access

router = APIRouter(prefix="/v1")


@router.post("/search")
async def search(body: SearchRequest, state: State, user: CurrentUser) -> dict[str, Any]:
    """Only passages of collections `user` may read, filtered inside both legs' SQL."""
    async with state.pool.connection() as conn:
        allowed = await access.readable(conn, user)
    started = time.perf_counter()
    passages = await run_search(state.pool, state.embedder, state.settings, body, readable=allowed)
    state.metrics.retrieval("search", started)
    return {
        "object": "list",
        "query": body.query,
        "mode": body.mode,
        "data": [passage_json(i, p) for i, p in enumerate(passages, 1)],
    }
