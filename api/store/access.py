"""Who may read and write which collection. Reads go through the SQL function
`readable_collections` (migration 0004), so every query that filters on it (both search legs,
files, models) sees the same answer, current to the request: no cache to outlive a revocation.

A collection is owned by a user, or by nobody (a watched folder's, until an admin says
otherwise): owners and admins may write, readers are the owner, admins (for ownerless ones),
and whoever holds a grant to themselves or to a group of theirs (`everyone` holds every user).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from core.settings import DEFAULT_COLLECTION, valid_collection

from .accounts import User

EVERYONE = "everyone"


async def readable(conn: psycopg.AsyncConnection, user: User) -> tuple[str, ...]:
    cur = await conn.execute("SELECT readable_collections(%s) ORDER BY 1", (user.id,))
    return tuple(r[0] for r in await cur.fetchall())


async def may_write(conn: psycopg.AsyncConnection, user: User, collection: str) -> bool:
    """Owners write to their collections, admins to any; a new name is created on first write."""
    if user.role == "admin":
        return True
    cur = await conn.execute("SELECT owner_id FROM collections WHERE name = %s", (collection,))
    row = await cur.fetchone()
    return row is None or row[0] == user.id


async def claim(conn: psycopg.AsyncConnection, user: User, collection: str) -> None:
    """Create `collection` owned by `user` when it does not exist yet (an admin's new
    collections stay ownerless, like watched folders)."""
    owner = None if user.role == "admin" else user.id
    await conn.execute(
        "INSERT INTO collections (name, owner_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (collection, owner),
    )


def personal_collection(user: User) -> str:
    """Where a user's uploads go when they name no collection: `default` for admins, their own
    `user-<name>` collection for everyone else."""
    if user.role == "admin":
        return DEFAULT_COLLECTION
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", user.name).strip("-.") or str(user.id)
    name = f"user-{slug}"[:64]
    return name if valid_collection(name) else f"user-{user.id}"


# --- administration (CLI and admin API; a sync connection) -------------------------------------


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    owner: str | None
    readers: tuple[str, ...]  # user names and `group:<name>`
    documents: int


class AccessError(ValueError):
    """An administrative change names something that does not exist."""


def _user_id(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM users WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise AccessError(f"no user named {name!r}")
    return int(row[0])


def create_collection(conn: psycopg.Connection, name: str, owner: str | None) -> None:
    if not valid_collection(name):
        raise AccessError(f"{name!r} is not a valid collection name (letters, digits, _ . -)")
    owner_id = _user_id(conn, owner) if owner else None
    conn.execute(
        "INSERT INTO collections (name, owner_id) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET owner_id = EXCLUDED.owner_id",
        (name, owner_id),
    )


def _existing(conn: psycopg.Connection, collection: str) -> None:
    if not conn.execute("SELECT 1 FROM collections WHERE name = %s", (collection,)).fetchone():
        raise AccessError(f"no collection named {collection!r}")


def grant(
    conn: psycopg.Connection, collection: str, *, user: str | None = None, group: str | None = None
) -> None:
    """Let `user` (or every member of `group`) read `collection`."""
    _existing(conn, collection)
    if (user is None) == (group is None):
        raise AccessError("grant to exactly one of a user or a group")
    if user is not None:
        conn.execute(
            "INSERT INTO collection_grants (collection, user_id) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            (collection, _user_id(conn, user)),
        )
    else:
        conn.execute(
            "INSERT INTO collection_grants (collection, group_name) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            (collection, group),
        )


def revoke(
    conn: psycopg.Connection, collection: str, *, user: str | None = None, group: str | None = None
) -> bool:
    if user is not None:
        cur = conn.execute(
            "DELETE FROM collection_grants WHERE collection = %s AND user_id = %s",
            (collection, _user_id(conn, user)),
        )
    else:
        cur = conn.execute(
            "DELETE FROM collection_grants WHERE collection = %s AND group_name = %s",
            (collection, group),
        )
    return cur.rowcount > 0


def add_to_group(conn: psycopg.Connection, user: str, group: str) -> None:
    conn.execute(
        "INSERT INTO user_groups (user_id, group_name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (_user_id(conn, user), group),
    )


def remove_from_group(conn: psycopg.Connection, user: str, group: str) -> bool:
    cur = conn.execute(
        "DELETE FROM user_groups WHERE user_id = %s AND group_name = %s",
        (_user_id(conn, user), group),
    )
    return cur.rowcount > 0


def list_collections(conn: psycopg.Connection) -> list[CollectionInfo]:
    rows = conn.execute(
        """
        SELECT c.name, o.name,
               coalesce(array_agg(DISTINCT coalesce(gu.name, 'group:' || g.group_name))
                        FILTER (WHERE g.id IS NOT NULL), '{}'),
               (SELECT count(*) FROM documents d
                WHERE d.collection = c.name AND d.status <> 'deleted')
        FROM collections c
        LEFT JOIN users o ON o.id = c.owner_id
        LEFT JOIN collection_grants g ON g.collection = c.name
        LEFT JOIN users gu ON gu.id = g.user_id
        GROUP BY c.name, o.name ORDER BY c.name
        """
    ).fetchall()
    return [CollectionInfo(r[0], r[1], tuple(sorted(r[2])), int(r[3])) for r in rows]
