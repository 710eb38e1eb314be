"""Database access shared by every room: connections with pgvector types, and the async pool."""

from __future__ import annotations

import time

import psycopg
from pgvector.psycopg import register_vector, register_vector_async
from psycopg_pool import AsyncConnectionPool


def has_vector_type(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_type WHERE typname = 'vector'").fetchone()
    return row is not None


def has_table(conn: psycopg.Connection, name: str) -> bool:
    """Whether the table `name` exists in the public schema (a database never migrated has
    none)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{name}",)).fetchone()
    return bool(row and row[0])


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A synchronous connection with pgvector's types registered (when the extension exists)."""
    conn = psycopg.connect(url, autocommit=autocommit)
    if has_vector_type(conn):
        register_vector(conn)
        if not autocommit:
            conn.commit()
    return conn


def wait_for_db(url: str, timeout_s: float = 30.0) -> None:
    """Block until the database accepts connections, or raise the last error after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def _configure(conn: psycopg.AsyncConnection) -> None:
    await register_vector_async(conn)


def async_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 10.0
) -> AsyncConnectionPool:
    """An (unopened) async pool whose connections know pgvector's types; open it in a lifespan.
    A connection is waited for `timeout_s` (DB_POOL_TIMEOUT_S), then PoolTimeout."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        configure=_configure,
        open=False,
        kwargs={"autocommit": True},
        # a connection that died with its server (a restart) is replaced, not handed out
        check=AsyncConnectionPool.check_connection,
        timeout=timeout_s,
    )
