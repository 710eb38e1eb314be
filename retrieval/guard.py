"""A delete wins over work already queued or running for a document.

Every documents row carries a generation that changes whenever the row becomes 'deleted'
(migration 0009), by whoever deletes it. Work on a document reads the generation when it starts
(`read`) and writes only through `write`, which locks the row and checks that it is still at that
generation: a delete that came first makes the write raise Superseded; a delete that comes later
waits for the write's transaction and then removes what it wrote. Either way the delete wins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from . import documents


class Superseded(RuntimeError):
    """The document was deleted (or deleted and replaced) since this work started on it."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} was deleted while it was being indexed; nothing was written")
        self.path = path


@dataclass
class Generation:
    """A document's row as a piece of work found it: None when there was no row."""

    path: str
    value: int | None
    status: str | None

    @property
    def deleted(self) -> bool:
        return self.status == "deleted"


def read(conn: psycopg.Connection, path: str) -> Generation:
    found = documents.generation(conn, path)
    return Generation(path, *found) if found else Generation(path, None, None)


@contextlib.contextmanager
def write(conn: psycopg.Connection, seen: Generation) -> Iterator[None]:
    """A transaction (or a savepoint in the caller's) in which the document's row is locked and
    still as `seen`; raises Superseded when it is not. Afterwards `seen` follows the row, so a
    write that created it is seen by the next one. The caller commits, as after any write."""
    with conn.transaction():
        locked = documents.generation(conn, seen.path, lock=True)
        if (locked[0] if locked else None) != seen.value:
            raise Superseded(seen.path)
        yield
        found = read(conn, seen.path)
        seen.value, seen.status = found.value, found.status
