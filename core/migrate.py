"""Numbered, forward-only SQL migrations, recorded in `schema_migrations`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from .db import has_table, wait_for_db

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x48454152  # "HEAR": one migrator at a time


class IndexModelMismatch(RuntimeError):
    """The index was built with another embedding model than the one configured."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("core.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(found, key=lambda x: x.version)


_VERSIONS = "SELECT version FROM schema_migrations"


def applied(conn: psycopg.Connection) -> set[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
        " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    return {r[0] for r in conn.execute(_VERSIONS)}


def recorded(conn: psycopg.Connection) -> set[int]:
    """The versions applied to this database, changing nothing (none if it was never migrated)."""
    return (
        {r[0] for r in conn.execute(_VERSIONS)} if has_table(conn, "schema_migrations") else set()
    )


async def recorded_async(conn: psycopg.AsyncConnection) -> set[int]:
    """The versions applied to this database (the API's readiness check; it was migrated)."""
    cur = await conn.execute(_VERSIONS)
    return {r[0] for r in await cur.fetchall()}


def migrate(url: str, *, embed_model: str, embed_dim: int, reembed: bool = False) -> list[str]:
    """Apply pending migrations and pin the embedding model; return the names applied.

    Refuses (IndexModelMismatch) when the index holds vectors of another model, unless `reembed`,
    which empties the index, switches it to the new model and queues every document for
    re-embedding (offline; `hearth reindex` changes the model while search keeps serving).
    """
    done: list[str] = []
    wait_for_db(url)  # a server still starting (compose, a reboot) is waited for, not failed
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            have = applied(conn)
            for mig in available():
                if mig.version in have:
                    continue
                with conn.transaction():
                    conn.execute(mig.sql.format(embed_dim=int(embed_dim)).encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (mig.version, mig.name),
                    )
                done.append(f"{mig.version:04d}_{mig.name}")
            _pin_embedder(conn, embed_model, embed_dim, reembed)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return done


def _pin_embedder(conn: psycopg.Connection, model: str, dim: int, reembed: bool) -> None:
    meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM index_meta").fetchall())
    if not meta:
        with conn.transaction():
            conn.execute(
                "INSERT INTO index_meta (key, value) VALUES ('embed_model', %s), ('embed_dim', %s)",
                (model, str(dim)),
            )
        return
    if meta.get("embed_model") == model and meta.get("embed_dim") == str(dim):
        return
    if not reembed:
        raise IndexModelMismatch(
            f"the index was built with embedding model {meta.get('embed_model')!r} "
            f"(dim {meta.get('embed_dim')}), but EMBED_MODEL is {model!r} (dim {dim}); "
            f"set EMBED_MODEL={meta.get('embed_model')}, or move the index to {model}: "
            f"`hearth reindex --embed-model {model}` (search keeps serving meanwhile) or "
            "`hearth migrate --reembed` (empties the index and re-ingests every file)"
        )
    with conn.transaction():
        # an unfinished `hearth reindex` (retrieval.reembed) is dropped with the old vectors
        conn.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS embedding_next")
        conn.execute("DELETE FROM index_meta WHERE key IN ('next_embed_model', 'next_embed_dim')")
        conn.execute("DELETE FROM chunks")
        conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
        conn.execute(f"ALTER TABLE chunks ALTER COLUMN embedding TYPE vector({int(dim)})")
        conn.execute(
            "CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)"
        )
        conn.execute(
            "UPDATE documents SET content_hash = NULL, status = 'queued', chunk_count = 0,"
            " updated_at = now() WHERE status <> 'deleted'"
        )
        conn.execute("UPDATE index_meta SET value = %s WHERE key = 'embed_model'", (model,))
        conn.execute("UPDATE index_meta SET value = %s WHERE key = 'embed_dim'", (str(dim),))
