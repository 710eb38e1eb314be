"""The API's writes that can wait for the response: request-log rows, tokens' last use, and
finished chat turns. One task per API process writes whatever has queued up as one statement on
a connection of its own (a group commit: under load, one commit serves many requests; when idle,
each write goes at once, alone).

Nothing is lost on the way: a turn's write goes on when the client that asked leaves (its stream
only waits for it, so a response still ends after its turn is stored, and a follow-up names a
conversation that exists); a write that fails in a batch is retried alone, so it loses only
itself; a connection lost is made again (the batch retried once); and the app's shutdown waits
for everything queued (`close`).

The statement is put together from each table's home: api.store.conversations, api.store.accounts
and workers.requestlog give their part as a CTE.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

import psycopg

from workers import requestlog

from . import accounts, sessions
from .conversations import NewTurn, turns_ctes

log = logging.getLogger(__name__)

Row = tuple[Any, ...]


class Uses(NamedTuple):
    """Tokens (by id) and browser sessions (by hash) used since the last write."""

    tokens: list[int]
    sessions: list[str]


NO_USES = Uses([], [])
USED_WAIT_S = 0.5  # a token's last use waits this long at most for other writes to go with


class WriteBehind:
    def __init__(self, database_url: str | None) -> None:
        self._url = database_url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._logs: list[Row] = []
        self._used: set[int] = set()
        self._seen: set[str] = set()
        self._turns: list[tuple[NewTurn, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._used_waited = False
        self._used_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start writing (in the app's lifespan)."""
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
        self._wait_for_company()
        self._used.add(token_id)

    def seen(self, session_hash: str) -> None:
        """A browser session was used just now (its `last_seen_at`), as `used`."""
        self._wait_for_company()
        self._seen.add(session_hash)

    def _wait_for_company(self) -> None:
        if self._used_timer is None and self._wake is not None:
            self._used_timer = asyncio.get_running_loop().call_later(USED_WAIT_S, self._used_due)

    def turn(self, turn: NewTurn) -> asyncio.Future[None]:
        """Store `turn`; the future is done when it is committed (or holds why it was not).
        The write happens whether or not anyone awaits the future."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)
        self._turns.append((turn, done))
        self._kick()
        return done

    async def close(self, timeout_s: float = 10.0) -> None:
        """Write everything queued, then stop (the app's shutdown)."""
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
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _pending(self) -> bool:
        return bool(self._logs or self._used or self._seen or self._turns)

    def _due(self) -> bool:
        """Whether there is something to write now (a last use alone can wait)."""
        return bool(self._logs or self._turns or (self._used_waited and self._pending()))

    def _used_due(self) -> None:
        self._used_waited, self._used_timer = True, None
        self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self._closing and self._task is None:  # a straggler after the shutdown's flush
            self._task = asyncio.get_running_loop().create_task(self._straggler())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            if self._closing and not self._pending():
                return

    async def _straggler(self) -> None:
        try:
            await self._flush()
        finally:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            self._task = None

    async def _flush(self) -> None:
        while self._due() or (self._closing and self._pending()):
            logs, self._logs = self._logs, []
            used, self._used, self._used_waited = sorted(self._used), set(), False
            seen, self._seen = sorted(self._seen), set()
            if self._used_timer is not None:
                self._used_timer.cancel()
                self._used_timer = None
            turns, self._turns = self._turns, []
            await self._write(logs, Uses(used, seen), turns)

    async def _write(
        self, logs: list[Row], used: Uses, turns: list[tuple[NewTurn, asyncio.Future[None]]]
    ) -> None:
        failed: dict[int, BaseException] = {}
        new = [t for t, _ in turns]
        try:
            try:
                await self._execute(_statement(logs, used, new))
            except psycopg.OperationalError:  # the connection went (a restart): once more
                await self._execute(_statement(logs, used, new))
        except psycopg.Error as exc:
            if (
                self._conn is None
                or len(logs) + len(turns) + bool(used.tokens or used.sessions) == 1
            ):
                failed = self._lost(exc, logs, turns)
            else:
                failed = await self._one_by_one(logs, used, new)
        except Exception as exc:  # no database to write to: this batch is lost, said so
            failed = self._lost(exc, logs, turns)
        for i, (_, done) in enumerate(turns):
            if done.done():
                continue
            if i in failed:
                done.set_exception(failed[i])
            else:
                done.set_result(None)

    async def _execute(self, statement: tuple[str, dict[str, Any]]) -> None:
        if self._conn is None or self._conn.closed:
            if not self._url:
                raise RuntimeError("no database to write to")
            self._conn = None
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        try:
            await self._conn.execute(*statement)
        except psycopg.OperationalError:
            await self._conn.close()
            self._conn = None
            raise

    async def _one_by_one(
        self, logs: list[Row], used: Uses, turns: list[NewTurn]
    ) -> dict[int, BaseException]:
        """Each write as a statement of its own, after their batch failed: the bad one alone
        is lost. Returns the turns that failed, by index."""
        failed: dict[int, BaseException] = {}
        for i, turn in enumerate(turns):
            try:
                await self._execute(_statement([], NO_USES, [turn]))
            except psycopg.Error as exc:
                log.warning("could not store a chat turn: %s", exc)
                failed[i] = exc
        for row in logs:
            try:
                await self._execute(_statement([row], NO_USES, []))
            except psycopg.Error as exc:
                log.warning("could not write the request log: %s", exc)
        if used.tokens or used.sessions:
            try:
                await self._execute(_statement([], used, []))
            except psycopg.Error as exc:
                log.warning("could not record the last use of tokens and sessions: %s", exc)
        return failed

    @staticmethod
    def _lost(
        exc: BaseException, logs: list[Row], turns: list[tuple[NewTurn, asyncio.Future[None]]]
    ) -> dict[int, BaseException]:
        log.warning(
            "could not write %d request-log rows and %d chat turns: %s", len(logs), len(turns), exc
        )
        return dict.fromkeys(range(len(turns)), exc)


def _statement(logs: list[Row], used: Uses, turns: list[NewTurn]) -> tuple[str, dict[str, Any]]:
    """One statement for the batch: each table's part as a CTE (only the parts it needs)."""
    ctes: list[str] = []
    params: dict[str, Any] = {}
    if turns:
        more, values = turns_ctes(turns)
        ctes += more
        params.update(values)
    if logs:
        cte, values = requestlog.rows_cte(logs)
        ctes.append(cte)
        params.update(values)
    if used.tokens:
        cte, values = accounts.touch_cte(used.tokens)
        ctes.append(cte)
        params.update(values)
    if used.sessions:
        cte, values = sessions.seen_cte(used.sessions)
        ctes.append(cte)
        params.update(values)
    return "WITH " + ", ".join(ctes) + " SELECT 1", params


def _retrieve(done: asyncio.Future[None]) -> None:
    """A failed turn whose stream was gone is logged by the writer; asyncio need not say that
    nobody looked at it."""
    if not done.cancelled():
        done.exception()
