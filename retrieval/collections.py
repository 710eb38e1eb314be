"""Collection rows that trusted configuration creates, owned by nobody (that is, by the admins):
`default` and every watched root's, before the API serves a request (`hearth up`, `hearth
migrate`, the API's start-up), and any collection the folder worker or `hearth ingest` is told to
file documents under. A document that came from a user's upload never creates its collection:
the API decides where an upload may go (api.store.access) before its document exists, and the
foreign key on `documents.collection` (migration 0007) refuses any other.

The home of the `collections` table: every statement that reads or changes its rows is here
(the API's access rules in api.store.access decide *whether*; this module does it). It lives in
`retrieval/` because the documents' writer (retrieval.documents) creates configured collections. Two
SQL functions of migration 0007 also write it: `upload_collection` (called by api.store.access)
and the trigger that gives a new user a personal collection."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from core.settings import DEFAULT_COLLECTION, Settings

UPLOAD_SOURCE = "upload"
_ENSURE = "INSERT INTO collections (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"


def configured(settings: Settings) -> list[str]:
    """`default` and the collections of the watched roots."""
    names = [DEFAULT_COLLECTION, *(root.collection for root in settings.watch_roots)]
    return list(dict.fromkeys(names))


def ensure(conn: psycopg.Connection, names: Iterable[str]) -> None:
    """Create those of `names` that do not exist, ownerless; an existing one is left as it is."""
    conn.execute(_ENSURE, (list(names),))


async def ensure_async(conn: psycopg.AsyncConnection, names: Iterable[str]) -> None:
    await conn.execute(_ENSURE, (list(names),))


def ensure_for_writer(conn: psycopg.Connection, collection: str, source: str) -> None:
    """Before a worker writes a document: its collection is created ownerless when the document
    comes from the operator's configuration (a watched folder, `hearth ingest`), never when it
    comes from an upload."""
    if source != UPLOAD_SOURCE:
        ensure(conn, (collection,))


@dataclass(frozen=True)
class Collection:
    name: str
    owner_id: int | None  # None: owned by nobody, that is by the admins
    owner: str | None  # the owner's user name
    personal: bool  # a user's own `user-<name>`, created with them


_GET = (
    "SELECT c.name, c.owner_id, o.name, c.personal FROM collections c"
    " LEFT JOIN users o ON o.id = c.owner_id WHERE c.name = %s"
)


def get(conn: psycopg.Connection, name: str, *, lock: bool = False) -> Collection | None:
    """The collection `name`, or None; `lock`: its row stays locked until the transaction ends."""
    row = conn.execute(_GET + (" FOR UPDATE OF c" if lock else ""), (name,)).fetchone()
    return Collection(*row) if row else None


async def get_async(conn: psycopg.AsyncConnection, name: str) -> Collection | None:
    cur = await conn.execute(_GET, (name,))
    row = await cur.fetchone()
    return Collection(*row) if row else None


def create(conn: psycopg.Connection, name: str, owner_id: int | None) -> bool:
    """Create `name` owned by `owner_id`; False (and nothing changes) if it exists."""
    made = conn.execute(
        "INSERT INTO collections (name, owner_id) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING RETURNING name",
        (name, owner_id),
    ).fetchone()
    return made is not None


def set_owner(conn: psycopg.Connection, name: str, owner_id: int | None) -> None:
    conn.execute("UPDATE collections SET owner_id = %s WHERE name = %s", (owner_id, name))


def personal_of(conn: psycopg.Connection, user_id: int) -> str | None:
    """The personal collection of the user `user_id`, if they have one."""
    row = conn.execute(
        "SELECT name FROM collections WHERE owner_id = %s AND personal", (user_id,)
    ).fetchone()
    return row[0] if row else None


def listing(
    conn: psycopg.Connection,
) -> list[tuple[str, str | None, list[str], int, bool]]:
    """Every collection for the admins: name, owner's name, readers (user names and
    `group:<name>`, from the grants), live documents in it, personal or not."""
    rows = conn.execute(
        """
        SELECT c.name, o.name,
               coalesce(array_agg(DISTINCT coalesce(gu.name, 'group:' || g.group_name))
                        FILTER (WHERE g.id IS NOT NULL), '{}'),
               (SELECT count(*) FROM documents d
                WHERE d.collection = c.name AND d.status <> 'deleted'),
               c.personal
        FROM collections c
        LEFT JOIN users o ON o.id = c.owner_id
        LEFT JOIN collection_grants g ON g.collection = c.name
        LEFT JOIN users gu ON gu.id = g.user_id
        GROUP BY c.name, o.name ORDER BY c.name
        """
    ).fetchall()
    return [(r[0], r[1], list(r[2]), int(r[3]), bool(r[4])) for r in rows]
