"""Who may read and write which collection (README "Users, tokens and access").

Reads go through the SQL function `readable_collections` (migration 0004), so every query that
filters on it (both search legs, files, models) sees the same answer, current to the request: no
cache to outlive a revocation.

Collections exist only when created explicitly (migration 0007): `default` and the watched roots'
by configuration, a user's personal `user-<name>` with the user, others by an admin, or by a user
when COLLECTION_CREATORS=users. A collection is owned by a user or by nobody (the admins); owners
and admins write to it; its readers are the owner, admins (for ownerless ones), and whoever
holds a grant to themselves or to a group of theirs (`everyone` holds every user). A collection a
user cannot read answers exactly like one that does not exist. Ownership changes only on an
explicit transfer (`set_owner`).

The home of `collection_grants` and `user_groups`; the `collections` rows themselves are read and
written through their home, retrieval.collections (this module holds the rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

from core.settings import valid_collection
from retrieval import collections

from .accounts import User, find_user

EVERYONE = "everyone"
PERSONAL_PREFIX = "user-"  # names of this form are created with their user, nowhere else

Verdict = Literal["created", "ok", "forbidden", "missing"]


async def readable(conn: psycopg.AsyncConnection, user: User) -> tuple[str, ...]:
    cur = await conn.execute("SELECT readable_collections(%s) ORDER BY 1", (user.id,))
    return tuple(r[0] for r in await cur.fetchall())


async def may_write(conn: psycopg.AsyncConnection, user: User, collection: str) -> bool:
    """Owners write to their collections, admins to any existing one."""
    found = await collections.get_async(conn, collection)
    return found is not None and (user.role == "admin" or found.owner_id == user.id)


async def upload_target(
    conn: psycopg.AsyncConnection, user: User, wanted: str | None, users_create: bool
) -> tuple[str, Verdict]:
    """Where `user`'s upload goes and whether it may: one SQL statement decides (the function
    `upload_collection`, migration 0007), so of two uploads racing to create a name exactly one
    wins, and a name the user cannot read takes the same path as one that does not exist.
    `wanted` None: `default` for admins, the user's personal collection for others."""
    cur = await conn.execute(
        "SELECT collection, verdict FROM upload_collection(%s, %s, %s)",
        (user.id, wanted, users_create),
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


# --- administration (CLI and admin API; a sync connection) -------------------------------------


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    owner: str | None
    readers: tuple[str, ...]  # user names and `group:<name>`
    documents: int
    personal: bool = False


class AccessError(ValueError):
    """An administrative change names something that does not exist (or cannot)."""


class AccessConflict(ValueError):
    """An administrative change that would silently undo someone's ownership."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _user_id(conn: psycopg.Connection, name: str) -> int:
    user = find_user(conn, name)
    if user is None:
        raise AccessError(f"no user named {name!r}")
    return user.id


def create_collection(conn: psycopg.Connection, name: str, owner: str | None) -> bool:
    """Create `name` owned by `owner` (None: the admins); True if it was created. An existing
    collection with that owner is left as it is (False); with another owner it is an
    AccessConflict: ownership changes only by `set_owner`."""
    if not valid_collection(name):
        raise AccessError(f"{name!r} is not a valid collection name (letters, digits, _ . -)")
    if name.startswith(PERSONAL_PREFIX):
        raise AccessError(
            f"{name!r}: names starting with {PERSONAL_PREFIX!r} are personal collections,"
            " created with their user"
        )
    owner_id = _user_id(conn, owner) if owner else None
    if collections.create(conn, name, owner_id):
        return True
    found = collections.get(conn, name)
    current = found.owner if found else None
    if current != owner:
        raise AccessConflict(
            f"collection {name!r} exists, owned by {current or 'the admins'}; to hand it over:"
            f" hearth collection owner {name} {owner or '--admins'}",
            "collection_exists",
        )
    return False


def set_owner(conn: psycopg.Connection, name: str, owner: str | None) -> None:
    """Hand `name` over to `owner` (None: to the admins). The previous owner keeps no access
    unless a grant gives it. A personal collection stays with its user."""
    owner_id = _user_id(conn, owner) if owner else None
    found = collections.get(conn, name, lock=True)
    if found is None:
        raise AccessError(f"no collection named {name!r}")
    if found.personal:
        raise AccessConflict(
            f"{name!r} is a personal collection and stays with its user; grant read access instead",
            "personal_collection",
        )
    collections.set_owner(conn, name, owner_id)


def personal_collection_of(conn: psycopg.Connection, user: str) -> str | None:
    found = find_user(conn, user)
    return collections.personal_of(conn, found.id) if found else None


def _existing(conn: psycopg.Connection, collection: str) -> None:
    if collections.get(conn, collection) is None:
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
    return [
        CollectionInfo(name, owner, tuple(sorted(readers)), documents, personal)
        for name, owner, readers, documents, personal in collections.listing(conn)
    ]
