"""POST /v1/search: retrieval only — the passages the chat API would give the model, with
their scores and where they come from."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response

from .. import timing
from ..search import SearchRequest, early_vector, passage_json, run_search
from ..state import State
from ..store import access
from ..timing import TimedUser

router = APIRouter(prefix="/v1")


@router.post("/search")
async def search(
    body: SearchRequest, state: State, user: TimedUser, response: Response
) -> dict[str, Any]:
    """Only passages of collections `user` may read, filtered inside both legs' SQL. An
    admin's response carries a Server-Timing header: where its time went (api.timing).

    The query's embedding starts first, on its own thread, and the readable collections are
    looked up while it runs: the search itself waits for both."""
    timings = timing.current()
    started = time.perf_counter()
    early = early_vector(state.embedder, body)
    try:
        with timings.stage("access"):
            async with state.pool.connection() as conn:
                allowed = await access.readable(conn, user)
    except BaseException:
        if early is not None:
            early.close()
        raise
    passages = await run_search(
        state.pool, state.embedder, state.settings, body, readable=allowed, early=early
    )
    state.metrics.retrieval("search", started)
    data = [passage_json(i, p) for i, p in enumerate(passages, 1)]
    response.headers.update(timing.header_for(user))
    return {"object": "list", "query": body.query, "mode": body.mode, "data": data}
