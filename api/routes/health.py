"""GET /health (liveness) and GET /ready (readiness). Unauthenticated, no content revealed.

/health answers 200 while the process serves requests, whatever its dependencies do: a failing
liveness probe restarts the process, which cures nothing when the database is down. /ready says
whether this instance can answer now: database, Redis, an LLM backend, and a schema with every
migration this code knows applied; load balancers and `hearth up` wait for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import redis.asyncio as aioredis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from core.migrate import available, recorded_async
from core.settings import redis_client_url

from ..state import State

router = APIRouter()
log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5.0
OK = ("ok", "not configured")


@functools.cache
def known_migrations() -> dict[int, str]:
    """The migrations this code ships, by version (read once: they do not change at run time)."""
    return {m.version: f"{m.version:04d}_{m.name}" for m in available()}


async def _check_db(state: State) -> str:
    async with state.pool.connection(timeout=3) as conn:
        await conn.execute("SELECT 1")
    return "ok"


async def _check_migrations(state: State) -> str:
    async with state.pool.connection(timeout=3) as conn:
        applied = await recorded_async(conn)
    pending = [
        name for version, name in sorted(known_migrations().items()) if version not in applied
    ]
    return "pending: " + ", ".join(pending) if pending else "ok"


async def _check_redis(state: State) -> str:
    if not state.settings.redis_url:
        return "not configured"
    client = aioredis.Redis.from_url(redis_client_url(state.settings.redis_url), socket_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return "ok"


async def _check_llm(state: State) -> str:
    # a backend busy answering is ready, though it may not answer a probe meanwhile
    return await state.llm.ready()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: State) -> JSONResponse:
    checks = {
        "database": _check_db(state),
        "redis": _check_redis(state),
        "llm": _check_llm(state),
        "migrations": _check_migrations(state),
    }
    results = await asyncio.gather(
        *(asyncio.wait_for(c, CHECK_TIMEOUT_S) for c in checks.values()), return_exceptions=True
    )
    outcome = {
        name: (r if isinstance(r, str) else f"error: {type(r).__name__}")
        for name, r in zip(checks, results, strict=True)
    }
    failing = [name for name, v in outcome.items() if v not in OK]
    if failing:
        log.warning("not ready: %s", ", ".join(f"{n} {outcome[n]}" for n in failing))
        body = {"status": "unavailable", "failing": failing, "checks": outcome}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ok", "checks": outcome})
