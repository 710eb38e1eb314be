"""Live tokens' users, remembered by an API process for at most TOKEN_CACHE_S, so that a request
needs no database round trip to know who is asking.

Keyed by the token's SHA-256 (the plain token is never kept). An entry ends at its TTL or at the
token's expiry, whichever comes first. Revoking a token or disabling a user (api.store.accounts)
empties every cache of the process at once and sends a NOTIFY on `hearth_auth`; each API process
listens (`listen`) and empties its cache when one arrives, so a change made by the CLI or by
another API process takes effect as soon as PostgreSQL delivers it. Should that message be lost
(the listening connection down), an entry still dies at its TTL: that is the bound on how long a
revoked token can be honoured. Failed lookups are never cached (a wrong token always costs a
query, as before).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:  # api.store.accounts imports this module
    from .accounts import User

log = logging.getLogger(__name__)

CHANNEL = "hearth_auth"

_LIVE: weakref.WeakSet[TokenCache] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


class TokenCache:
    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._entries: dict[str, tuple[float, User]] = {}
        self._lock = threading.Lock()  # revocations arrive from other threads (admin routes)
        self.generation = 0  # bumped by every invalidation
        with _LIVE_LOCK:
            _LIVE.add(self)

    def __len__(self) -> int:
        return len(self._entries)

    def digests(self) -> list[str]:
        return list(self._entries)

    def get(self, digest: str) -> User | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self.clock() >= entry[0]:
            self._entries.pop(digest, None)
            return None
        return entry[1]

    def put(
        self,
        digest: str,
        user: User,
        expires_at: datetime | None,
        generation: int | None = None,
    ) -> None:
        """Remember `user` for the token `digest`. `generation`: the cache's when the lookup
        began; a lookup that an invalidation overtook (it may have read the token just before
        its revocation was committed) is not remembered."""
        if self.ttl_s <= 0:
            return
        now = self.clock()
        until = now + self.ttl_s
        if expires_at is not None:
            until = min(until, now + (expires_at - datetime.now(UTC)).total_seconds())
        if until <= now:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            if len(self._entries) >= self.max_entries:
                self._evict(now)
            self._entries[digest] = (until, user)

    def _evict(self, now: float) -> None:
        for digest in [d for d, (until, _) in self._entries.items() if until <= now]:
            del self._entries[digest]
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


def invalidate_all() -> None:
    """Empty every token cache of this process (a token was revoked or a user disabled)."""
    with _LIVE_LOCK:
        caches = list(_LIVE)
    for cache in caches:
        cache.invalidate()


def notify(conn: psycopg.Connection) -> None:
    """In the transaction that revokes or disables: empty this process's caches now, and tell
    every listening API process when the transaction commits."""
    invalidate_all()
    conn.execute(f"NOTIFY {CHANNEL}")


async def listen(
    url: str, cache: TokenCache, ready: asyncio.Event | None = None, retry_s: float = 1.0
) -> None:
    """Empty `cache` on every NOTIFY on CHANNEL, until cancelled; `ready` is set once it first
    listens. Whenever the connection is (re)made the cache is emptied (what was said while it
    was down is lost), and while it is down entries live no longer than their TTL."""
    first = True
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if not first:
                    cache.invalidate()
                first = False
                if ready is not None:
                    ready.set()
                async for _ in conn.notifies():
                    cache.invalidate()
        except (psycopg.Error, OSError) as exc:
            cache.invalidate()
            log.warning(
                "not hearing of token revocations (%s); cached tokens live %g s at most",
                exc,
                cache.ttl_s,
            )
        first = False
        await asyncio.sleep(retry_s)
