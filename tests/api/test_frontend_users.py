"""A trusted front-end (Open WebUI with ENABLE_FORWARD_USER_INFO_HEADERS) speaks for many people
through one token: with a token marked as a front-end token, the X-OpenWebUI-User-* headers it
forwards make each person a Hearth user of their own (their own role, personal collection,
conversations and limits). The same headers on any other token change nothing. And stateless
clients (no conversation id, the whole history in `messages`) continue the stored conversation
their history matches. The real app on a real PostgreSQL, the real embedding model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import access, accounts
from core.embedder import Embedder
from core.settings import get_settings
from retrieval import index
from tests.conftest import free_port
from tests.factories import make_document
from tests.mock_llm import MockLLM, serve

SECRETS = {
    "ann": "Ann's gym locker code is Zulu-4417 and the locker is in the east hall.",
    "bob": "Bob's safe combination is Kilo-9923 and the safe is behind the painting.",
}
MARKERS = {"ann": "Zulu-4417", "bob": "Kilo-9923"}
QUESTION = "What are the locker codes and safe combinations?"


def person(key: str, role: str = "user") -> dict[str, str]:
    """The headers Open WebUI forwards for one of its users (its user ids are UUIDs)."""
    return {
        "X-OpenWebUI-User-Id": f"0000-{key}",
        "X-OpenWebUI-User-Email": f"{key}@example.org",
        "X-OpenWebUI-User-Name": key.capitalize(),
        "X-OpenWebUI-User-Role": role,
    }


def frontend_token(db: psycopg.Connection, owner: str, role: str = "admin") -> str:
    token = accounts.issue_token(db, accounts.ensure_user(db, owner, role), "owui", frontend=True)
    db.commit()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forwarded_user(db: psycopg.Connection, key: str) -> tuple[int, str, str] | None:
    row = db.execute(
        "SELECT id, name, role FROM users WHERE external_id LIKE %s", (f"%:0000-{key}",)
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


@pytest.fixture
def mock() -> Iterator[MockLLM]:
    with serve(MockLLM(reply=lambda messages: " ".join(str(m["content"]) for m in messages))) as m:
        yield m


def app_for(pg_url: str, mock: MockLLM, embedder: Embedder, **kw: Any) -> Any:
    s = get_settings(
        database_url=pg_url,
        llm_base_url=mock.url,
        llm_model="mock",
        relevance_threshold=0,
        rate_limit_rps=0,
        **kw,
    )
    return create_app(s, embedder=embedder)


def test_two_forwarded_persons_see_only_their_own_collections_and_conversations(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, embedder: Embedder
) -> None:
    token = frontend_token(db, "owui")
    with TestClient(app_for(pg_url, mock, embedder)) as c:
        for key in ("ann", "bob"):  # first sight: a user of their own, with a personal collection
            r = c.get("/v1/models", headers={**bearer(token), **person(key, role="admin")})
            assert r.status_code == 200, r.text
        for key, text in SECRETS.items():
            found = forwarded_user(db, key)
            assert found is not None, key
            _, name, role = found
            assert role == "user"  # Open WebUI's "admin" role makes nobody a Hearth admin
            personal = access.personal_collection_of(db, name)
            assert personal is not None
            doc = make_document(f"/w/{key}.md", [text], title=f"{key} notes")
            doc.collection = personal
            index.replace_chunks(db, doc, embedder.embed([ch.embed_text for ch in doc.chunks]))
        db.commit()
        said: dict[str, str] = {}
        for key in ("ann", "bob"):
            h = {**bearer(token), **person(key, role="admin")}
            out = [c.post("/v1/search", headers=h, json={"query": QUESTION, "k": 10}).text]
            chat = {"model": "hearth", "messages": [{"role": "user", "content": QUESTION}]}
            r = c.post("/v1/chat/completions", headers=h, json=chat)
            assert r.status_code == 200, r.text
            out.append(r.text)
            convs = c.get("/v1/conversations", headers=h).json()["data"]
            assert [x["id"] for x in convs] == [r.headers["X-Conversation-Id"]]
            out.append(c.get(f"/v1/conversations/{convs[0]['id']}", headers=h).text)
            assert c.get("/v1/admin/users", headers=h).status_code == 403
            said[key] = "\n".join(out)
        assert MARKERS["ann"] in said["ann"] and MARKERS["bob"] not in said["ann"]
        assert MARKERS["bob"] in said["bob"] and MARKERS["ann"] not in said["bob"]
        # the front-end's own account (no person named) has neither's conversations
        assert c.get("/v1/conversations", headers=bearer(token)).json()["data"] == []
        assert c.get("/v1/admin/users", headers=bearer(token)).status_code == 200
        # a person is known again by their id, whatever name and email they have now
        renamed = {**person("ann"), "X-OpenWebUI-User-Name": "Annie", "X-OpenWebUI-User-Email": ""}
        convs = c.get("/v1/conversations", headers={**bearer(token), **renamed}).json()["data"]
        assert len(convs) == 1
        # a disabled person is refused
        found = forwarded_user(db, "bob")
        assert found is not None
        accounts.set_disabled(db, found[1], True)
        db.commit()
        r = c.get("/v1/models", headers={**bearer(token), **person("bob")})
        assert r.status_code == 401 and r.json()["error"]["code"] == "user_disabled"


def test_forwarded_headers_on_a_normal_token_change_nothing(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, embedder: Embedder
) -> None:
    carol = accounts.ensure_user(db, "carol")
    token = accounts.issue_token(db, carol, "laptop")
    frontend_token(db, "owui")
    db.commit()
    with TestClient(app_for(pg_url, mock, embedder)) as c:
        # a front-end token makes "dave" someone; carol's plain token cannot be him
        c.get("/v1/models", headers={**bearer(frontend_token(db, "owui2")), **person("dave")})
        users_before = db.execute("SELECT count(*) FROM users").fetchone()
        h = {**bearer(token), **person("dave", role="admin")}
        chat = {"model": "hearth", "messages": [{"role": "user", "content": QUESTION}]}
        r = c.post("/v1/chat/completions", headers=h, json=chat)
        assert r.status_code == 200, r.text
        assert db.execute("SELECT count(*) FROM users").fetchone() == users_before
        owner = db.execute(
            "SELECT user_id FROM conversations WHERE id = %s", (r.headers["X-Conversation-Id"],)
        ).fetchone()
        assert owner == (carol.id,)
        assert c.get("/v1/admin/users", headers=h).status_code == 403
        dave = forwarded_user(db, "dave")
        assert dave is not None
        # with or without the headers, carol's token is carol: her one conversation
        assert len(c.get("/v1/conversations", headers=h).json()["data"]) == 1


def serve_app(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def test_six_persons_stream_at_once_through_one_frontend_token_one_person_is_limited(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, embedder: Embedder
) -> None:
    token = frontend_token(db, "owui", role="user")
    mock.reply = lambda _: " ".join(f"w{i}" for i in range(40))
    mock.delay_s = 0.1  # each answer streams for seconds: all six are open at once
    server, thread, base = serve_app(app_for(pg_url, mock, embedder, max_streams_per_token=4))
    body = {
        "model": "mock",  # plain chat: no retrieval
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    try:
        with httpx.Client(base_url=base, timeout=30) as http:

            def six(headers: list[dict[str, str]]) -> list[int]:
                codes = []
                with ExitStack() as open_streams:
                    for h in headers:  # each stays open while the next one starts
                        r = open_streams.enter_context(
                            http.stream("POST", "/v1/chat/completions", json=body, headers=h)
                        )
                        codes.append(r.status_code)
                        if r.status_code == 429:
                            r.read()
                            assert r.json()["error"]["code"] == "too_many_streams"
                    assert mock.finished == 0 or len(codes) == 6
                return codes

            people = [{**bearer(token), **person(f"p{i}")} for i in range(6)]
            assert six(people) == [200] * 6
            one = [{**bearer(token), **person("p0")}] * 6
            assert six(one) == [200] * 4 + [429] * 2
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_stateless_clients_next_turn_continues_its_stored_conversation(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, embedder: Embedder
) -> None:
    token = frontend_token(db, "owui")
    ann, bob = {**bearer(token), **person("ann")}, {**bearer(token), **person("bob")}
    mock.reply = lambda messages: f"Answer number {len(messages)}."
    first = [{"role": "user", "content": "Where is the boiler manual?"}]
    with TestClient(app_for(pg_url, mock, embedder)) as c:

        def ask(headers: dict[str, str], messages: list[dict[str, str]]) -> tuple[str, str]:
            r = c.post(
                "/v1/chat/completions",
                headers=headers,
                json={"model": "mock", "messages": messages},
            )
            assert r.status_code == 200, r.text
            return r.headers["X-Conversation-Id"], r.json()["choices"][0]["message"]["content"]

        cid, answer = ask(ann, first)
        second = [
            *first,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And the warranty?"},
        ]
        assert ask(ann, second)[0] == cid  # the same stored conversation
        stored = c.get(f"/v1/conversations/{cid}", headers=ann).json()
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2
        assert len(c.get("/v1/conversations", headers=ann).json()["data"]) == 1
        # another person with the very same history gets a conversation of their own
        bob_cid, _ = ask(bob, second)
        assert bob_cid != cid
        # the same first question afresh is a new conversation, not a continuation
        assert ask(ann, first)[0] != cid
        # so is a history that does not match what was stored (edited earlier turns)
        edited = [*first, {"role": "assistant", "content": "x"}] * 2 + [second[-1]]
        assert ask(ann, edited)[0] not in (cid, bob_cid)


def test_the_admin_api_issues_front_end_tokens(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, embedder: Embedder
) -> None:
    admin = accounts.issue_token(db, accounts.ensure_user(db, "root", "admin"), "admin")
    accounts.ensure_user(db, "owui")
    db.commit()
    with TestClient(app_for(pg_url, mock, embedder)) as c:
        r = c.post("/v1/admin/users/owui/tokens", headers=bearer(admin), json={"frontend": True})
        assert r.status_code == 200 and r.json()["frontend"] is True, r.text
        front = r.json()["token"]
        plain = c.post("/v1/admin/users/owui/tokens", headers=bearer(admin), json={}).json()
        assert plain["frontend"] is False
        listed = c.get("/v1/admin/tokens", headers=bearer(admin)).json()["data"]
        assert [t["frontend"] for t in listed if t["user"] == "owui"] == [True, False]
        c.get("/v1/models", headers={**bearer(front), **person("erin")})
        c.get("/v1/models", headers={**bearer(plain["token"]), **person("frank")})
        assert forwarded_user(db, "erin") is not None and forwarded_user(db, "frank") is None
        bad = {**bearer(front), "X-OpenWebUI-User-Id": "x" * 300}
        r = c.get("/v1/models", headers=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_forwarded_user"
        nul = {**bearer(front), **person("gina"), "X-OpenWebUI-User-Name": "G%00ina%0A"}
        assert c.get("/v1/models", headers=nul).status_code == 200


def test_a_forwarded_person_never_becomes_an_existing_user_and_is_created_once(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, embedder: Embedder
) -> None:
    """A front-end naming an email (or name) that a Hearth admin has is not that admin; twelve
    first requests at once for one new person make one user."""
    root = accounts.ensure_user(db, "hal@example.org", "admin")
    accounts.ensure_user(db, "Hal", "admin")
    token = frontend_token(db, "owui", role="user")
    server, thread, base = serve_app(app_for(pg_url, mock, embedder))
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            h = {**bearer(token), **person("hal", role="admin")}
            assert http.get("/v1/admin/users", headers=h).status_code == 403
            found = forwarded_user(db, "hal")
            assert found is not None and found[0] != root.id and found[2] == "user"
            assert found[1].startswith("hal@example.org#")

            codes: list[int] = []
            go = threading.Barrier(12)

            def first_sight() -> None:
                go.wait(10)
                r = http.get("/v1/models", headers={**bearer(token), **person("ivy")})
                codes.append(r.status_code)

            workers = [threading.Thread(target=first_sight) for _ in range(12)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(30)
            assert codes == [200] * 12
            rows = db.execute(
                "SELECT count(*) FROM users WHERE external_id LIKE '%:0000-ivy'"
            ).fetchone()
            assert rows == (1,)
    finally:
        server.should_exit = True
        thread.join(10)
