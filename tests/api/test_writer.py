"""The API's write-behind (api.store.writer): the request log, tokens' last use and finished chat
turns are written after the response by one task, many to a transaction (group commit), none
lost: not when the client leaves once it has its answer, not when one write of a batch is bad,
not at shutdown. Real PostgreSQL; the blocking is a real table lock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from tests.conftest import serve_app
from tests.factories import HashEmbedder, until
from tests.mock_llm import MockLLM

EMB = HashEmbedder()


def log_row(route: str, user_id: int | None = None) -> tuple[Any, ...]:
    return (None, user_id, "POST", route, "mock", 200, 1.5, 10, 3, None, None)


def count(db: psycopg.Connection, sql: str) -> int:
    db.rollback()  # a fresh snapshot
    row = db.execute(sql).fetchone()
    db.rollback()
    return int(row[0]) if row else 0


async def with_writer(pg_url: str, work: Any) -> Any:
    from api.store.writer import WriteBehind

    writer = WriteBehind(pg_url)
    writer.start()
    try:
        return await work(writer)
    finally:
        await writer.close()


def new_turn(user_id: int, question: str, conversation_id: str | None = None) -> Any:
    import uuid

    from api.store.conversations import NewTurn

    return NewTurn(
        conversation_id or str(uuid.uuid4()), user_id, question, "an answer", [], 10, 3, False
    )


def test_writes_queued_at_shutdown_are_flushed(db: psycopg.Connection, pg_url: str) -> None:
    ann = accounts.ensure_user(db, "ann")
    db.execute("TRUNCATE request_log")
    db.commit()
    locker = psycopg.connect(pg_url)
    locker.execute("LOCK TABLE request_log, messages IN EXCLUSIVE MODE")

    async def work(writer: Any) -> None:
        for _ in range(5):
            writer.log(log_row("/v1/x", ann.id))
        stored = [writer.turn(new_turn(ann.id, f"q{i}")) for i in range(2)]
        closing = asyncio.create_task(writer.close())
        for _ in range(20):  # the writer is stuck on the lock, the close waits for it
            await asyncio.sleep(0.01)
        assert not closing.done()
        assert count(db, "SELECT count(*) FROM request_log") == 0
        await asyncio.to_thread(locker.rollback)  # the lock goes; the close must finish the work
        await closing
        await asyncio.gather(*stored)

    try:
        asyncio.run(with_writer(pg_url, work))
    finally:
        locker.close()
    assert count(db, "SELECT count(*) FROM request_log") == 5
    assert count(db, "SELECT count(*) FROM conversations") == 2
    assert count(db, "SELECT count(*) FROM messages") == 4


def test_what_arrives_together_is_one_transaction(db: psycopg.Connection, pg_url: str) -> None:
    ann = accounts.ensure_user(db, "ann")
    token = accounts.issue_token(db, ann, "t")
    db.execute("TRUNCATE request_log")
    db.commit()
    token_id = db.execute("SELECT id FROM tokens").fetchone()
    assert token_id is not None and token

    async def work(writer: Any) -> None:
        done = [writer.turn(new_turn(ann.id, f"q{i}")) for i in range(10)]
        for i in range(20):
            writer.log(log_row(f"/v1/{i}", ann.id))
            writer.used(token_id[0])
        await asyncio.gather(*done)

    asyncio.run(with_writer(pg_url, work))
    xmins = count(
        db,
        "SELECT count(DISTINCT x) FROM (SELECT xmin::text AS x FROM request_log UNION ALL"
        " SELECT xmin::text FROM messages UNION ALL SELECT xmin::text FROM conversations) t",
    )
    assert xmins == 1
    assert count(db, "SELECT count(*) FROM request_log") == 20
    assert count(db, "SELECT count(*) FROM messages") == 20
    assert count(db, "SELECT count(*) FROM tokens WHERE last_used_at IS NOT NULL") == 1
    # in the order they came: each turn's question before its answer, turn after turn
    db.rollback()
    roles = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert [r[0] for r in roles] == ["user", "assistant"] * 10
    assert [r[1] for r in roles[::2]] == [f"q{i}" for i in range(10)]


def test_last_use_of_tokens_and_sessions_is_recorded(db: psycopg.Connection, pg_url: str) -> None:
    from api.store import sessions
    from core.tokens import hash_token

    ann = accounts.ensure_user(db, "ann")
    token = accounts.issue_token(db, ann, "t")
    db.commit()

    async def work(writer: Any) -> None:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            opened = await sessions.create_session(conn, token)
            assert opened is not None
            found = await sessions.session_user(conn, opened[0])
        assert found is not None and found[1] == hash_token(opened[0])
        token_id = db.execute("SELECT id FROM tokens").fetchone()
        db.rollback()
        assert token_id is not None
        writer.used(token_id[0])
        writer.seen(found[1])
        # nothing else comes: they go on their own, a moment later (not at the writer's close)
        deadline = time.monotonic() + 10
        while not count(db, "SELECT count(*) FROM tokens WHERE last_used_at IS NOT NULL"):
            assert time.monotonic() < deadline, "the token's last use was not written"
            await asyncio.sleep(0.05)

    db.execute("UPDATE ui_sessions SET last_seen_at = '2000-01-01'")
    db.commit()
    asyncio.run(with_writer(pg_url, work))
    assert count(db, "SELECT count(*) FROM tokens WHERE last_used_at IS NOT NULL") == 1
    assert count(db, "SELECT count(*) FROM ui_sessions WHERE last_seen_at > '2001-01-01'") == 1


def test_turns_of_one_conversation_in_one_batch_keep_their_order(
    db: psycopg.Connection, pg_url: str
) -> None:
    """Continuing a stored conversation and starting one, twice each, in one batch."""
    import uuid

    ann = accounts.ensure_user(db, "ann")
    db.commit()
    x, y = str(uuid.uuid4()), str(uuid.uuid4())

    async def first(writer: Any) -> None:
        await writer.turn(new_turn(ann.id, "x0", x))

    asyncio.run(with_writer(pg_url, first))
    db.rollback()
    before = db.execute("SELECT updated_at FROM conversations WHERE id = %s", (x,)).fetchone()
    db.rollback()

    async def batch(writer: Any) -> None:
        turns = [("x1", x), ("y0", y), ("x2", x), ("y1", y)]
        await asyncio.gather(*(writer.turn(new_turn(ann.id, q, c)) for q, c in turns))

    asyncio.run(with_writer(pg_url, batch))
    rows = db.execute(
        "SELECT c.id::text, c.title, c.updated_at, m.role, m.content FROM messages m"
        " JOIN conversations c ON c.id = m.conversation_id ORDER BY m.id"
    ).fetchall()
    asked = {cid: [r[4] for r in rows if r[0] == cid and r[3] == "user"] for cid in (x, y)}
    assert asked == {x: ["x0", "x1", "x2"], y: ["y0", "y1"]}
    assert [r[3] for r in rows] == ["user", "assistant"] * 5
    titles = {r[0]: r[1] for r in rows}
    assert titles == {x: "x0", y: "y0"}
    assert before is not None and next(r[2] for r in rows if r[0] == x) > before[0]


def test_a_bad_write_loses_only_itself(db: psycopg.Connection, pg_url: str) -> None:
    ann = accounts.ensure_user(db, "ann")
    db.execute("TRUNCATE request_log")
    db.commit()

    async def work(writer: Any) -> list[Any]:
        good = writer.turn(new_turn(ann.id, "good one"))
        bad = writer.turn(new_turn(ann.id + 1000, "nobody's"))  # no such user: a foreign key
        writer.log(log_row("/v1/a", ann.id))
        other = writer.turn(new_turn(ann.id, "good two"))
        return list(await asyncio.gather(good, bad, other, return_exceptions=True))

    results = asyncio.run(with_writer(pg_url, work))
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], psycopg.errors.ForeignKeyViolation)
    assert count(db, "SELECT count(*) FROM messages WHERE content LIKE 'good%'") == 2
    assert count(db, "SELECT count(*) FROM messages") == 4
    assert count(db, "SELECT count(*) FROM request_log") == 1


def test_a_turn_is_kept_when_the_client_leaves_right_after_done(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    """The answer is whole, the client closes on `[DONE]` while the turn's write is still
    waiting (here on a lock), and the server gives up on the request: the write goes on, and so
    does the request log's (one writer: it waits behind the turn)."""
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "t")
    db.execute("TRUNCATE request_log")
    db.commit()
    s = get_settings(database_url=pg_url, llm_base_url=mock.url, llm_model="mock")
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    locker = psycopg.connect(pg_url)
    app = create_app(s, embedder=EMB)
    labels = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}

    def served() -> float:  # requests the app is done with (counted when its response ends)
        registry = app.state.hearth.metrics.registry
        return registry.get_sample_value("hearth_http_requests_total", labels) or 0.0

    try:
        with serve_app(app) as base:
            locker.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
            with httpx.Client(base_url=base, timeout=30) as c:
                headers = {"Authorization": f"Bearer {token}"}
                with c.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                    assert r.status_code == 200
                    for line in r.iter_lines():
                        if line == "data: [DONE]":
                            break
                    else:
                        raise AssertionError("no [DONE]")
                # the client is gone: the server gives up on the request while its turn's
                # write waits on the lock
                until(lambda: served() == 1, 20, "the server to notice the client left")
            locker.rollback()
            until(
                lambda: count(db, "SELECT count(*) FROM messages") == 2, 20, "the turn's messages"
            )
            until(lambda: count(db, "SELECT count(*) FROM request_log") == 1, 20, "the log row")
    finally:
        locker.close()
    rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert rows[0] == ("user", "hi") and rows[1][0] == "assistant" and rows[1][1].strip()


def test_the_request_log_is_written_when_the_client_leaves_mid_stream(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "t")
    db.execute("TRUNCATE request_log")
    db.commit()
    mock.delay_s = 0.2
    mock.reply = lambda messages: " ".join(["word"] * 50)
    s = get_settings(database_url=pg_url, llm_base_url=mock.url, llm_model="mock")
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with serve_app(create_app(s, embedder=EMB)) as base:
        with httpx.Client(base_url=base, timeout=30) as c:
            headers = {"Authorization": f"Bearer {token}"}
            with c.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                for line in r.iter_lines():
                    if "word" in line:
                        break  # leave mid-answer
        until(lambda: count(db, "SELECT count(*) FROM request_log") == 1, 20, "the log row")
    # a client that left mid-answer stopped it: that turn is not kept (api.chat_stream)
    assert count(db, "SELECT count(*) FROM messages") == 0
