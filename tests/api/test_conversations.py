"""Conversation routes and backend failures on the real app and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import access, accounts
from api.store.conversations import add_turn, open_conversation
from core.db import async_pool
from core.settings import get_settings
from retrieval import index
from tests.conftest import free_port
from tests.factories import HashEmbedder, make_document


def seed(
    pg_url: str, user_id: int, question: str, doc_id: int | None = None, collection: str = ""
) -> str:
    async def go() -> str:
        pool = async_pool(pg_url, min_size=1, max_size=1)
        await pool.open()
        try:
            async with pool.connection() as conn:
                cid, _ = await open_conversation(conn, user_id, None, [])
                await add_turn(
                    conn,
                    cid,
                    user_id,
                    question,
                    "An answer [1].",
                    [
                        {
                            "index": 1,
                            "document_id": doc_id,
                            "collection": collection,
                            "path": "/w/a.md",
                            "snippet": "x",
                        }
                    ],
                    10,
                    3,
                )
                return cid
        finally:
            await pool.close()

    return asyncio.run(go())


@pytest.fixture
def two_users(
    db: psycopg.Connection, pg_url: str
) -> Iterator[tuple[TestClient, TestClient, str, str]]:
    ann, bob = accounts.ensure_user(db, "ann"), accounts.ensure_user(db, "bob")
    tokens = [accounts.issue_token(db, u, "test") for u in (ann, bob)]
    access.create_collection(db, "ann-notes", "ann")
    doc = make_document("/w/a.md", ["E-4471 means the pressure is low."])
    doc.collection = "ann-notes"
    index.replace_chunks(db, doc, HashEmbedder().embed([c.embed_text for c in doc.chunks]))
    row = db.execute("SELECT id FROM documents WHERE path = '/w/a.md'").fetchone()
    assert row is not None
    db.commit()
    ann_cid = seed(pg_url, ann.id, "What does E-4471 mean?", row[0], "ann-notes")
    bob_cid = seed(pg_url, bob.id, "When to water?")
    # a closed port: no LLM backend is listening
    settings = get_settings(database_url=pg_url, llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    app = create_app(settings, embedder=HashEmbedder())
    with (
        TestClient(app, headers={"Authorization": f"Bearer {tokens[0]}"}) as a,
        TestClient(app, headers={"Authorization": f"Bearer {tokens[1]}"}) as b,
    ):
        yield a, b, ann_cid, bob_cid


def test_each_user_lists_and_reads_only_their_own(two_users) -> None:  # type: ignore[no-untyped-def]
    a, b, ann_cid, bob_cid = two_users
    assert [c["id"] for c in a.get("/v1/conversations").json()["data"]] == [ann_cid]
    full = a.get(f"/v1/conversations/{ann_cid}").json()
    assert full["title"] == "What does E-4471 mean?" and full["message_count"] == 2
    assert [m["role"] for m in full["messages"]] == ["user", "assistant"]
    assert full["messages"][1]["sources"][0]["path"] == "/w/a.md"
    for method, extra in (("get", {}), ("delete", {}), ("patch", {"json": {"title": "x"}})):
        r = getattr(b, method)(f"/v1/conversations/{ann_cid}", **extra)
        assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
    assert [c["id"] for c in b.get("/v1/conversations").json()["data"]] == [bob_cid]
    assert "E-4471" not in b.get("/v1/conversations").text


def test_rename_and_delete(two_users) -> None:  # type: ignore[no-untyped-def]
    a, _, ann_cid, _ = two_users
    r = a.patch(f"/v1/conversations/{ann_cid}", json={"title": "Boiler codes"})
    assert r.status_code == 200 and r.json()["title"] == "Boiler codes"
    assert a.patch(f"/v1/conversations/{ann_cid}", json={"title": ""}).status_code == 422
    assert a.delete(f"/v1/conversations/{ann_cid}").json()["deleted"] is True
    assert a.get(f"/v1/conversations/{ann_cid}").status_code == 404
    assert a.get("/v1/conversations/not-a-uuid").status_code == 404
    assert a.get(f"/v1/conversations/{uuid.uuid4()}").status_code == 404


def test_another_users_conversation_id_starts_a_new_thread(two_users) -> None:  # type: ignore[no-untyped-def]
    """Sending Bob's id to chat never continues Bob's thread (the backend is down here, so the
    request fails after the conversation is chosen; Bob's thread must be untouched)."""
    a, b, _, bob_cid = two_users
    r = a.post(
        "/v1/chat/completions",
        headers={"X-Conversation-Id": bob_cid},
        json={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 503
    assert b.get(f"/v1/conversations/{bob_cid}").json()["message_count"] == 2
    assert len(a.get("/v1/conversations").json()["data"]) == 1  # the failed turn left nothing


@pytest.mark.parametrize("stream", [False, True])
def test_backend_down_is_503_json(two_users, stream: bool) -> None:  # type: ignore[no-untyped-def]
    a, *_ = two_users
    r = a.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2",
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == "llm_unavailable" and "not reachable" in err["message"]
