"""Changing the embedding model without downtime.

The new model's vectors are written into a shadow column, `chunks.embedding_next`, beside the
served `embedding`; search reads `embedding` throughout. Chunks that workers write meanwhile (with
the old model) are picked up by later passes. Once every chunk has a new vector and the shadow's
HNSW index is built, one short transaction fills the last stragglers, drops the old column and
renames the shadow (and its index) into place, and records the new model in `index_meta`.

Writers that still embed with the retired model are refused from then on (retrieval.index
`IndexModelChanged`); the API and the workers notice the new model in `index_meta` and load it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import psycopg
from psycopg import sql

from core.embedder import Embedder
from core.types import Chunk

SHADOW = "embedding_next"
SHADOW_INDEX = "chunks_embedding_next_hnsw"
INDEX = "chunks_embedding_hnsw"
_LOCK_ID = 0x48454149  # "HEAI": one reindex at a time (apart from the migrator's lock)


class ReindexError(RuntimeError):
    """A reindex cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True)
class Progress:
    """Where a reindex stands: chunks in total and those still without a new vector."""

    model: str
    dim: int
    total: int
    missing: int

    @property
    def done(self) -> int:
        return self.total - self.missing


def index_meta(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM index_meta").fetchall())


async def index_meta_async(conn: psycopg.AsyncConnection) -> dict[str, str]:
    cur = await conn.execute("SELECT key, value FROM index_meta")
    return dict(await cur.fetchall())


def model_to_follow(meta: dict[str, str], seen: str | None, loaded: str) -> str | None:
    """The model a long-running process should load now, or None to keep `loaded`: the index's
    model when it changed since the process last looked (`seen`), or when `loaded` is retired."""
    current = meta.get("embed_model")
    if not current or current == loaded:
        return None
    if (seen is not None and current != seen) or loaded in retired_models(meta):
        return current
    return None


def retired_models(meta: dict[str, str]) -> list[str]:
    """Models the index was switched away from: writers still embedding with one are stale."""
    return list(json.loads(meta.get("retired_embed_models", "[]")))


def pending(conn: psycopg.Connection) -> Progress | None:
    """The reindex in progress (its shadow column exists), or None."""
    meta = index_meta(conn)
    if "next_embed_model" not in meta or not _has_shadow(conn):
        return None
    row = conn.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {} IS NULL) FROM chunks").format(
            sql.Identifier(SHADOW)
        )
    ).fetchone()
    assert row is not None
    return Progress(meta["next_embed_model"], int(meta["next_embed_dim"]), row[0], row[1])


def _has_shadow(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attname = %s"
        " AND NOT attisdropped",
        (SHADOW,),
    ).fetchone()
    return row is not None


def begin(conn: psycopg.Connection, model: str, dim: int) -> Progress:
    """Add the shadow column for `model` (dimension `dim`), or find the one a previous,
    interrupted run of the same reindex left behind."""
    meta = index_meta(conn)
    if meta.get("embed_model") == model and meta.get("embed_dim") == str(dim):
        raise ReindexError(f"the index already uses embedding model {model!r} (dim {dim})")
    nxt = (meta.get("next_embed_model"), meta.get("next_embed_dim"))
    if nxt != (None, None) and nxt != (model, str(dim)) and _has_shadow(conn):
        raise ReindexError(
            f"a reindex to {nxt[0]!r} (dim {nxt[1]}) is in progress: finish it with "
            f"`hearth reindex --embed-model {nxt[0]}`, or drop it with `hearth reindex --abort`"
        )
    with conn.transaction():
        if nxt != (model, str(dim)):
            conn.execute(sql.SQL("ALTER TABLE chunks DROP COLUMN IF EXISTS {}").format(_shadow()))
        conn.execute(
            sql.SQL("ALTER TABLE chunks ADD COLUMN IF NOT EXISTS {} vector({})").format(
                _shadow(), sql.Literal(int(dim))
            )
        )
        for key, value in (("next_embed_model", model), ("next_embed_dim", str(dim))):
            conn.execute(
                "INSERT INTO index_meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, value),
            )
    progress = pending(conn)
    assert progress is not None
    return progress


def _shadow() -> sql.Identifier:
    return sql.Identifier(SHADOW)


def _embed_rows(embedder: Embedder, rows: list[tuple[int, str, str]], dim: int) -> np.ndarray:
    texts = [Chunk(ordinal=0, text=text, context=context).embed_text for _, context, text in rows]
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    if vectors.shape != (len(rows), dim):
        raise ReindexError(f"the embedder returned vectors of shape {vectors.shape}, not dim {dim}")
    return vectors


def _write(conn: psycopg.Connection, ids: list[int], vectors: np.ndarray) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE chunks c SET {col} = u.e FROM unnest(%s::bigint[], %s::vector[]) u(id, e)"
            " WHERE c.id = u.id"
        ).format(col=_shadow()),
        (ids, list(vectors)),
    )


def fill_batch(
    conn: psycopg.Connection, embedder: Embedder, dim: int, *, after: int, batch: int
) -> tuple[int, int] | None:
    """Embed the next `batch` chunks (id > `after`) still without a new vector, in one
    transaction; return (the last id done, how many), or None when none is left past `after`.
    Chunk texts come from the database: nothing is parsed again."""
    rows = conn.execute(
        sql.SQL(
            "SELECT id, context, text FROM chunks WHERE id > %s AND {} IS NULL ORDER BY id LIMIT %s"
        ).format(_shadow()),
        (after, batch),
    ).fetchall()
    if not rows:
        return None
    vectors = _embed_rows(embedder, rows, dim)
    with conn.transaction():
        _write(conn, [r[0] for r in rows], vectors)
    return int(rows[-1][0]), len(rows)


def build_index(conn: psycopg.Connection) -> None:
    """The shadow's HNSW index, built without blocking writers (`conn` must be in autocommit).
    A build that was interrupted leaves an invalid index: it is dropped and built again."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = %s",
        (SHADOW_INDEX,),
    ).fetchone()
    if row is not None and row[0]:
        return
    if row is not None:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(SHADOW_INDEX)))
    conn.execute(
        sql.SQL("CREATE INDEX CONCURRENTLY {} ON chunks USING hnsw ({} vector_cosine_ops)").format(
            sql.Identifier(SHADOW_INDEX), _shadow()
        )
    )


def switch(conn: psycopg.Connection, embedder: Embedder, *, lock_timeout_s: float = 5.0) -> int:
    """In one transaction: wait out chunk writers, embed the chunks still without a new vector,
    put the new column and index in place of the old ones and record the new model. Return the
    number of stragglers embedded here.

    Writers wait from the start (a share lock on `chunks`); searches only for the renames at
    the end. `lock_timeout_s` bounds each wait for a lock (a long pg_dump, say): the transaction
    is then rolled back with psycopg.errors.LockNotAvailable, and may simply be tried again.
    """
    with conn.transaction():
        conn.execute(
            "SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout_s * 1000)}ms",)
        )
        # the row writers read FOR SHARE first: one that saw the old model commits before us
        conn.execute("SELECT value FROM index_meta WHERE key = 'embed_model' FOR UPDATE")
        conn.execute("LOCK TABLE chunks IN SHARE MODE")
        meta = index_meta(conn)
        if "next_embed_model" not in meta:
            raise ReindexError("no reindex in progress")
        model, dim = meta["next_embed_model"], int(meta["next_embed_dim"])
        rows = conn.execute(
            sql.SQL("SELECT id, context, text FROM chunks WHERE {} IS NULL ORDER BY id").format(
                _shadow()
            )
        ).fetchall()
        if rows:
            _write(conn, [r[0] for r in rows], _embed_rows(embedder, rows, dim))
        old_model = meta["embed_model"]
        conn.execute("ALTER TABLE chunks DROP COLUMN embedding")  # drops its index too
        conn.execute(sql.SQL("ALTER TABLE chunks RENAME COLUMN {} TO embedding").format(_shadow()))
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(SHADOW_INDEX), sql.Identifier(INDEX)
            )
        )
        conn.execute("ALTER TABLE chunks ALTER COLUMN embedding SET NOT NULL")
        retired = [m for m in retired_models(meta) if m != model]
        if old_model not in retired:
            retired.append(old_model)
        for key, value in (
            ("embed_model", model),
            ("embed_dim", str(dim)),
            ("retired_embed_models", json.dumps(retired)),
        ):
            conn.execute(
                "INSERT INTO index_meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, value),
            )
        conn.execute("DELETE FROM index_meta WHERE key IN ('next_embed_model', 'next_embed_dim')")
    return len(rows)


def abort(conn: psycopg.Connection) -> bool:
    """Drop a reindex in progress (its shadow column and index); True if there was one."""
    had = _has_shadow(conn) or "next_embed_model" in index_meta(conn)
    with conn.transaction():
        conn.execute(sql.SQL("ALTER TABLE chunks DROP COLUMN IF EXISTS {}").format(_shadow()))
        conn.execute("DELETE FROM index_meta WHERE key IN ('next_embed_model', 'next_embed_dim')")
    return had


def run(
    conn: psycopg.Connection,
    embedder: Embedder,
    *,
    batch: int = 64,
    on_progress: Callable[[str, Progress], None] | None = None,
    switch_attempts: int = 5,
) -> Progress:
    """Reindex with `embedder` to its end: passes over the chunks without a new vector until
    none is left (workers may add some meanwhile), the HNSW build, then the switch. `conn` must
    be in autocommit. Resumable: a new run continues from the shadow column a stopped one left.
    Stages reported: start, embed (after each batch), index, switch, switched."""
    if not conn.autocommit:
        raise ValueError("reindex needs an autocommit connection (CREATE INDEX CONCURRENTLY)")
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,)).fetchone()
    if not got or not got[0]:
        raise ReindexError("another `hearth reindex` is running on this database")
    report = on_progress or (lambda _stage, _p: None)
    try:
        progress = begin(conn, embedder.name, int(embedder.dim))
        report("start", progress)
        for final_pass in (False, True):
            last = 0
            while step := fill_batch(conn, embedder, progress.dim, after=last, batch=batch):
                last, n = step
                progress = replace(progress, missing=max(progress.missing - n, 0))
                report("embed", progress)
            progress = pending(conn) or progress
            if not final_pass:  # once filled: one bulk build; the index then follows updates
                report("index", progress)
                build_index(conn)
        report("switch", progress)
        for attempt in range(1, switch_attempts + 1):
            try:
                switch(conn, embedder)
                break
            except psycopg.errors.LockNotAvailable:
                if attempt == switch_attempts:
                    raise
                time.sleep(1.0)
        final = Progress(progress.model, progress.dim, progress.total, 0)
        report("switched", final)
        return final
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
