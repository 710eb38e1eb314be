"""The FastAPI app factory. The lifespan owns the pool, the embedder and the LLM client."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from core.db import async_pool
from core.embedder import Embedder, query_embedder_for
from core.offline import go_offline
from core.settings import Settings, redis_client_url
from retrieval import collections
from workers.celery_app import create_celery

from . import errors, textguard
from .backend_transport import backend_client
from .index_embedder import IndexEmbedder
from .limits import BodyLimit
from .llm import LLMClient
from .metrics import Metrics, RequestMetrics
from .middleware import AuthGate, RequestId, RequestLog
from .ratelimit import Limiter
from .routes import (
    admin,
    chat,
    conversations,
    docs,
    embeddings,
    files,
    health,
    metrics,
    models,
    passages,
    search,
    ui,
)
from .search import warm_up
from .state import AppState
from .store import tokencache
from .store.writer import WriteBehind
from .tokenizer import load_counter


def create_app(settings: Settings, embedder: Embedder | None = None) -> FastAPI:
    """Build the app; `embedder` may be passed in (tests) instead of loading EMBED_MODEL."""
    if not settings.database_url:
        raise ValueError("DATABASE_URL must be set (hearth up sets it for the embedded database)")
    database_url = settings.database_url
    measured = Metrics()  # built with the app: the request middleware needs it before start-up
    # request log, tokens' last use and chat turns, after the response (the middleware needs it)
    writer = WriteBehind(database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        go_offline()
        # the prompt tokenizer, loaded before the first chat: loading holds the GIL (~0.6 s)
        await asyncio.to_thread(load_counter, settings.tokenizer_file)
        # questions are embedded on QUERY_EMBED_BACKEND (ONNX by default: the same model, half
        # the time per question; core.embedder.query_backend)
        loaded: Embedder = (
            embedder
            if embedder is not None
            else await asyncio.to_thread(query_embedder_for, settings)
        )
        await warm_up(loaded)  # the model's first call is slow: not the first question's wait
        # follows the index's model: `hearth reindex` may switch it while the API runs
        emb = IndexEmbedder(loaded, functools.partial(query_embedder_for, settings))
        pool = async_pool(database_url, timeout_s=settings.db_pool_timeout_s)
        await pool.open(wait=True, timeout=30)
        # before the first request: nobody may take `default` or a watched root's name first
        async with pool.connection() as conn:
            await collections.ensure_async(conn, collections.configured(settings))
        celery = create_celery(settings) if settings.redis_url else None
        timeout = httpx.Timeout(settings.llm_timeout_s, connect=5.0)
        # keep a connection per concurrent stream alive (httpx keeps 20): at 64 streams a third
        # of the answers opened a new connection to the backend. Over api.backend_transport:
        # httpx's own costs ~50 µs per read of a stream
        async with backend_client(timeout, max_keepalive=512) as http:
            api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
            # the backends are asked nothing until the first chat (`hearth eval` never chats)
            llm = LLMClient(
                http,
                settings.llm_base_urls,
                settings.llm_model,
                api_key,
                fallback_window=settings.llm_max_model_len,
                health_interval_s=settings.llm_health_interval_s,
                deadline_max_s=settings.llm_deadline_max_s,
            )
            redis = (
                aioredis.Redis.from_url(redis_client_url(settings.redis_url))
                if settings.redis_url
                else None
            )
            limiter = Limiter(
                settings.rate_limit_rps,
                settings.rate_limit_burst,
                settings.max_streams_per_token,
                redis,
            )
            app.state.hearth = AppState(
                settings=settings,
                pool=pool,
                embedder=emb,
                llm=llm,
                limiter=limiter,
                celery=celery,
                redis=redis,
                metrics=measured,
                tokens=tokencache.TokenCache(settings.token_cache_s),
                writer=writer,
            )
            writer.start()
            follow = asyncio.create_task(emb.watch(pool))
            # other processes' revocations empty this one's token cache (api.store.tokencache)
            listening = asyncio.Event()
            revocations = asyncio.create_task(
                tokencache.listen(database_url, app.state.hearth.tokens, listening)
            )
            with contextlib.suppress(TimeoutError):  # without it, cached tokens live their TTL
                await asyncio.wait_for(listening.wait(), 10)
            try:
                yield
            finally:
                await llm.aclose()
                follow.cancel()
                revocations.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await revocations  # its connection closes before the loop goes
                if redis is not None:
                    await redis.aclose()
                await writer.close()
                await pool.close()
                if celery is not None:
                    await asyncio.to_thread(celery.close)

    # no public schema and no docs pages (they load Swagger UI from a CDN); API_DOCS=true
    # serves the schema to signed-in callers (api.routes.docs)
    app = FastAPI(
        title="Hearth",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(textguard.path_params)],
    )
    errors.install(app)
    # the last added runs first: the request id (so that every log line has it), the metrics,
    # CORS (pre-flights carry no token), the log, size, credentials, NULs and lone surrogates
    app.add_middleware(textguard.TextGuard)
    app.add_middleware(AuthGate)
    app.add_middleware(
        BodyLimit,
        max_bytes=int(settings.max_request_mb * 2**20),
        upload_max_bytes=settings.max_file_bytes,
    )
    app.add_middleware(RequestLog, keep_text=settings.log_chat_text, writer=writer)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Conversation-Id", "Retry-After", "X-Request-Id"],
        )
    app.add_middleware(RequestMetrics, metrics=measured)
    app.add_middleware(RequestId)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(models.router)
    app.include_router(chat.router)
    app.include_router(conversations.router)
    app.include_router(files.router)
    app.include_router(search.router)
    app.include_router(embeddings.router)
    app.include_router(admin.router)
    app.include_router(ui.router)
    app.include_router(passages.router)
    if settings.api_docs:
        app.include_router(docs.router)
    return app
