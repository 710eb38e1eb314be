"""The API's writes that can wait for the response: request-log rows, tokens' last use, and
finished chat turns. One task per API process writes whatever has queued up, all of it in one
transaction (a group commit: under load, one commit and a statement per table serve many
requests; when idle, each write goes at once, alone).

Nothing is lost on the way: a turn's write goes on when the client that asked leaves (its stream
only waits for it, so a response still ends after its turn is stored, and a follow-up names a
conversation that exists); a write that fails in a batch is retried alone, so it loses only
itself; and the app's shutdown waits for everything queued (`close`) before the pool closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from workers import requestlog

from . import accounts
from .conversations import NewTurn, add_turns

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
USED_WAIT_S = 0.5  # a token's last use waits this long at most for other writes to go with


class WriteBehind:
    def __init__(self, pool_ref: Callable[[], AsyncConnectionPool | None]) -> None:
        self._pool_ref = pool_ref
        self._logs: list[Row] = []
        self._used: set[int] = set()
        self._turns: list[tuple[NewTurn, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._used_waited = False
        self._used_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start writing (in the app's lifespan, once the pool is open)."""
        self._wake, self._closing = asyncio.Event(), False
        self._task = asyncio.create_task(self._run(), name="hearth-write-behind")
        if self._pending():
            self._wake.set()

    def log(self, row: Row) -> None:
        """A request-log row (workers.requestlog.WRITTEN's values)."""
        self._logs.append(row)
        self._kick()

    def used(self, token_id: int) -> None:
        """A token was used just now (its `last_used_at`): written with the request's log row,
        which follows, or on its own USED_WAIT_S later."""
        if self._used_timer is None and self._wake is not None:
            self._used_timer = asyncio.get_running_loop().call_later(USED_WAIT_S, self._used_due)
        self._used.add(token_id)

    def turn(self, turn: NewTurn) -> asyncio.Future[None]:
        """Store `turn`; the future is done when it is committed (or holds why it was not).
        The write happens whether or not anyone awaits the future."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)
        self._turns.append((turn, done))
        self._kick()
        return done

    async def close(self, timeout_s: float = 10.0) -> None:
        """Write everything queued, then stop (the app's shutdown, before the pool closes)."""
        self._closing = True
        task = self._task
        if task is None:
            return
        if self._wake is not None:
            self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            for _, done in self._turns:
                if not done.done():
                    done.set_exception(TimeoutError("not stored before the shutdown"))
            log.warning(
                "shutdown: %d request-log rows and %d chat turns not written within %g s",
                len(self._logs),
                len(self._turns),
                timeout_s,
            )
        self._task = None

    def _pending(self) -> bool:
        return bool(self._logs or self._used or self._turns)

    def _due(self) -> bool:
        """Whether there is something to write now (tokens' last use alone can wait)."""
        return bool(self._logs or self._turns or (self._used and self._used_waited))

    def _used_due(self) -> None:
        self._used_waited, self._used_timer = True, None
        self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self._closing and self._task is None:  # a straggler after the shutdown's flush
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            if self._closing and not self._pending():
                return

    async def _flush(self) -> None:
        while self._due() or (self._closing and self._pending()):
            logs, self._logs = self._logs, []
            used, self._used, self._used_waited = sorted(self._used), set(), False
            if self._used_timer is not None:
                self._used_timer.cancel()
                self._used_timer = None
            turns, self._turns = self._turns, []
            await self._write(logs, used, turns)

    async def _write(
        self, logs: list[Row], used: list[int], turns: list[tuple[NewTurn, asyncio.Future[None]]]
    ) -> None:
        failed: dict[int, BaseException] = {}
        try:
            pool = self._pool_ref()
            if pool is None:
                raise RuntimeError("no database pool")
            async with pool.connection() as conn:
                try:
                    async with conn.transaction():
                        await _apply(conn, logs, used, [t for t, _ in turns])
                except psycopg.Error:
                    if conn.closed or len(logs) + len(turns) + bool(used) == 1:
                        raise
                    failed = await _one_by_one(conn, logs, used, [t for t, _ in turns])
        except Exception as exc:  # the database is out of reach: this batch is lost, said so
            log.warning(
                "could not write %d request-log rows and %d chat turns: %s",
                len(logs),
                len(turns),
                exc,
            )
            failed = dict.fromkeys(range(len(turns)), exc)
        for i, (_, done) in enumerate(turns):
            if done.done():
                continue
            if i in failed:
                done.set_exception(failed[i])
            else:
                done.set_result(None)


async def _apply(
    conn: psycopg.AsyncConnection, logs: list[Row], used: list[int], turns: Sequence[NewTurn]
) -> None:
    await add_turns(conn, turns)
    await requestlog.write_many(conn, logs)
    if used:
        await accounts.touch_tokens(conn, used)


async def _one_by_one(
    conn: psycopg.AsyncConnection, logs: list[Row], used: list[int], turns: list[NewTurn]
) -> dict[int, BaseException]:
    """Each write in a transaction of its own, after their batch failed: the bad one alone is
    lost. Returns the turns that failed, by index."""
    failed: dict[int, BaseException] = {}
    for i, turn in enumerate(turns):
        try:
            async with conn.transaction():
                await add_turns(conn, [turn])
        except psycopg.Error as exc:
            log.warning("could not store a chat turn: %s", exc)
            failed[i] = exc
    for row in logs:
        try:
            async with conn.transaction():
                await requestlog.write(conn, row)
        except psycopg.Error as exc:
            log.warning("could not write the request log: %s", exc)
    if used:
        try:
            async with conn.transaction():
                await accounts.touch_tokens(conn, used)
        except psycopg.Error as exc:
            log.warning("could not record tokens' last use: %s", exc)
    return failed


def _retrieve(done: asyncio.Future[None]) -> None:
    """A failed turn whose stream was gone is logged by the writer; asyncio need not say that
    nobody looked at it."""
    if not done.cancelled():
        done.exception()
