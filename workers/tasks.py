"""Thin Celery tasks: they take paths, call `ingest`, and hold per-process resources.

A task queued by an API request carries the request's id in its headers; while it runs, the
worker's log lines carry that id (core.logs), and with LOG_FORMAT=json they are JSON lines too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from celery import shared_task
from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun

from core.db import connect
from core.embedder import Embedder, embedder_for
from core.logs import JsonFormatter, request_id_var
from core.offline import go_offline
from core.settings import DEFAULT_COLLECTION, Settings, get_settings
from ingest import configured
from ingest.batch import ingest_paths
from ingest.isolate import ParserProcess
from ingest.pipeline import IngestOptions, IngestResult, ingest_path, move_path
from ingest.sync import reconcile, root_for
from retrieval.index import IndexModelChanged
from retrieval.reembed import index_meta, model_to_follow

from . import requestlog
from .celery_app import TASK_INGEST, TASK_INGEST_FILES, TASK_MOVE, TASK_PRUNE_LOG, TASK_RESCAN

log = logging.getLogger(__name__)

# transient: the database restarted or a lock deadlocked; retried with backoff. Bad files are
# not errors here at all: the pipeline marks them failed and returns.
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)
# paths per ingest_files task a rescan queues: enough files' chunks to fill embedding batches,
# few enough that a retried or redelivered task redoes little (done files are found unchanged)
RESCAN_BATCH_FILES = 16
R = TypeVar("R")


class _Context:
    """Per-process settings, database connection and embedder, created on first use."""

    def __init__(self) -> None:
        go_offline()
        self.settings: Settings = get_settings()
        self._conn: psycopg.Connection | None = None
        self._embedder: Embedder | None = None
        self._index_model: str | None = None  # index_meta's model when last looked at

    @functools.cached_property
    def parser(self) -> ParserProcess:
        return configured.parser(self.settings)

    @property
    def embedder(self) -> Embedder:
        """EMBED_MODEL's embedder, until `hearth reindex` switches the index to another model:
        then that model's (looked up once per task; a write racing the switch is refused with
        IndexModelChanged and the task embeds again)."""
        meta = index_meta(self.conn)
        self.conn.commit()
        if self._embedder is None:
            self._embedder = embedder_for(self.settings)
        model = model_to_follow(meta, self._index_model, self._embedder.name)
        if model is not None:
            log.info("the index switched to embedding model %s: loading it", model)
            self._embedder = embedder_for(self.settings, model)
        self._index_model = meta.get("embed_model")
        return self._embedder

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            assert self.settings.database_url, "DATABASE_URL must be set for workers"
            self._conn = connect(self.settings.database_url)
        return self._conn

    def options(self, path: Path, collection: str | None, source: str) -> IngestOptions:
        if collection is None:
            roots = [replace(r, path=r.path.resolve()) for r in self.settings.watch_roots]
            root = root_for(Path(path), roots)
            collection = root.collection if root else DEFAULT_COLLECTION
        return configured.options(self.settings, collection=collection, source=source)


@functools.cache
def context() -> _Context:
    return _Context()


@task_prerun.connect
def adopt_request_id(task: Any = None, **_: Any) -> None:
    """The id of the API request that queued this task (None for beat and the watcher)."""
    request = getattr(task, "request", None)
    rid = getattr(request, "request_id", None)
    request_id_var.set(rid if isinstance(rid, str) else None)


@task_postrun.connect
def drop_request_id(**_: Any) -> None:
    request_id_var.set(None)


@after_setup_logger.connect
@after_setup_task_logger.connect
def json_log_lines(logger: logging.Logger | None = None, **_: Any) -> None:
    """Celery configures the worker's logging; with LOG_FORMAT=json its lines become ours."""
    if logger is not None and get_settings().log_format == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


def _retrying(name: str) -> Any:
    return shared_task(
        name=name, autoretry_for=TRANSIENT, retry_backoff=True, retry_backoff_max=60, max_retries=10
    )


def _embedding_again_if_switched(run: Callable[[], R]) -> R:
    """Run an ingest; if the index switched models while it embedded (its write was refused),
    run it once more: `context().embedder` is then the index's new model."""
    try:
        return run()
    except IndexModelChanged as exc:
        log.info("%s; embedding again", exc)
        return run()


@_retrying(TASK_INGEST)
def ingest_file(
    path: str,
    collection: str | None = None,
    source: str = "watch",
    generation: int | None = None,
) -> dict[str, Any]:
    """Sync one path: index it if new or changed, drop it from the index if it is gone.

    `generation` (a re-index sends it) is the document's when the task was queued: if it was
    deleted since, the task does nothing.
    """
    ctx = context()
    opts = ctx.options(Path(path), collection, source)
    return _embedding_again_if_switched(
        lambda: ingest_path(
            ctx.conn, ctx.embedder, Path(path), opts, ctx.parser.parse, generation=generation
        )
    ).__dict__


@_retrying(TASK_INGEST_FILES)
def ingest_files(items: list[list[str | None]], source: str = "watch") -> list[dict[str, Any]]:
    """Sync several paths, each `[path, collection or None]`, as `ingest_file` does one, with
    their chunks embedded together and the next files parsed while a batch embeds. One bad
    file fails alone, with its reason; the others index."""
    ctx = context()
    batch = []
    for path, collection in items:
        assert path is not None, "ingest_files: an item without a path"
        batch.append((Path(path), ctx.options(Path(path), collection, source)))
    results: list[IngestResult] = _embedding_again_if_switched(
        lambda: ingest_paths(ctx.conn, ctx.embedder, batch, ctx.parser.parse)
    )
    return [r.__dict__ for r in results]


@_retrying(TASK_MOVE)
def move_file(src: str, dest: str, collection: str | None = None) -> dict[str, Any]:
    """A rename or move: the document keeps its chunks if the bytes are the same."""
    ctx = context()
    opts = ctx.options(Path(dest), collection, "watch")
    return _embedding_again_if_switched(
        lambda: move_path(ctx.conn, ctx.embedder, Path(src), Path(dest), opts, ctx.parser.parse)
    ).__dict__


@_retrying(TASK_PRUNE_LOG)
def prune_request_log() -> int:
    """Delete request-log rows older than REQUEST_LOG_DAYS (0 keeps them)."""
    ctx = context()
    days = ctx.settings.request_log_days
    if not days:
        return 0
    removed = requestlog.prune(ctx.conn, days)
    ctx.conn.commit()
    return removed


@_retrying(TASK_RESCAN)
def rescan() -> dict[str, int]:
    """Reconcile every watched folder with the index and queue what changed."""
    ctx = context()
    plan = reconcile(ctx.conn, ctx.settings.watch_roots)
    ctx.conn.commit()
    for old, new, collection in plan.moves:
        move_file.delay(old, str(new), collection)
    for start in range(0, len(plan.to_ingest), RESCAN_BATCH_FILES):
        part = plan.to_ingest[start : start + RESCAN_BATCH_FILES]
        ingest_files.delay([[str(p), collection] for p, collection in part])
    for path in plan.to_delete:
        ingest_file.delay(path)
    counts = {
        "ingest": len(plan.to_ingest),
        "move": len(plan.moves),
        "delete": len(plan.to_delete),
        "unchanged": plan.unchanged,
    }
    log.info("rescan: %s", counts)
    return counts
