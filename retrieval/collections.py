"""Collection rows that trusted configuration creates, owned by nobody (that is, by the admins):
`default` and every watched root's, before the API serves a request (`hearth up`, `hearth
migrate`, the API's start-up), and any collection the folder worker or `hearth ingest` is told to
file documents under. A document that came from a user's upload never creates its collection:
the API decides where an upload may go (api.store.access) before its document exists, and the
foreign key on `documents.collection` (migration 0007) refuses any other."""

from __future__ import annotations

from collections.abc import Iterable

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
