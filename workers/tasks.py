"""Thin Celery tasks: they take paths, call `ingest`, and hold per-process resources."""

from __future__ import annotations

import functools
from dataclasses import replace
import logging
from pathlib import Path
from typing import Any

import psycopg
from celery import shared_task

from core.db import connect
from core.embedder import Embedder, load_embedder
from core.offline import go_offline
from core.settings import Settings, get_settings
from ingest.pipeline import IngestOptions, ingest_path
from ingest.sync import reconcile

from .celery_app import TASK_INGEST, TASK_RESCAN

log = logging.getLogger(__name__)


class _Context:
    """Per-process settings, database connection and embedder, created on first use."""

    def __init__(self) -> None:
        go_offline()
        self.settings: Settings = get_settings()
        self._conn: psycopg.Connection | None = None

    @functools.cached_property
    def embedder(self) -> Embedder:
        return load_embedder(self.settings.embed_model, self.settings.embed_batch_size)

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            assert self.settings.database_url, "DATABASE_URL must be set for workers"
            self._conn = connect(self.settings.database_url)
        return self._conn

    def options(self) -> IngestOptions:
        s = self.settings
        return IngestOptions(
            chunk_size=s.chunk_size, chunk_overlap=s.chunk_overlap, max_file_bytes=s.max_file_bytes
        )


@functools.cache
def context() -> _Context:
    return _Context()


@shared_task(
    name=TASK_INGEST, autoretry_for=(psycopg.OperationalError,), retry_backoff=True, max_retries=8
)
def ingest_file(path: str, collection: str | None = None, source: str = "watch") -> dict[str, Any]:
    """Sync one path: index it if new or changed, drop it from the index if it is gone."""
    ctx = context()
    opts = ctx.options()
    if collection:
        opts = replace(opts, collection=collection, source=source)
    result = ingest_path(ctx.conn, ctx.embedder, Path(path), opts)
    return result.__dict__


@shared_task(name=TASK_RESCAN)
def rescan() -> dict[str, int]:
    """Reconcile the watched folder with the index and queue what changed."""
    ctx = context()
    root = ctx.settings.watch_dir
    root.mkdir(parents=True, exist_ok=True)
    plan = reconcile(ctx.conn, root)
    ctx.conn.commit()
    for p in plan.to_ingest:
        ingest_file.delay(str(p))
    for path in plan.to_delete:
        ingest_file.delay(path)
    log.info(
        "rescan %s: %d to ingest, %d to delete, %d unchanged",
        root,
        len(plan.to_ingest),
        len(plan.to_delete),
        plan.unchanged,
    )
    return {
        "ingest": len(plan.to_ingest),
        "delete": len(plan.to_delete),
        "unchanged": plan.unchanged,
    }
