"""Nobody sees what they should not: two users with private collections holding secrets, a shared
collection, the real app on a real PostgreSQL with the real embedding model, and a backend that
repeats its whole prompt back — so a forbidden passage that reached a prompt would reach the
response bytes too. Every byte of every response is checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.rewrite import REWRITE_INSTRUCTIONS
from api.store import access, accounts
from core.embedder import Embedder
from core.settings import get_settings
from retrieval import index
from tests.factories import make_document
from tests.mock_llm import MockLLM, serve

SECRETS = {
    "ann": "Ann's gym locker code is Zulu-4417 and the locker is in the east hall.",
    "bob": "Bob's safe combination is Kilo-9923 and the safe is behind the painting.",
}
SHARED = "The shared wifi password for the whole house is maple tree."
MARKERS = {"ann": "Zulu-4417", "bob": "Kilo-9923"}  # nothing else (ids, hex) can spell these
QUESTIONS = (
    "What is the gym locker code?",
    "What is the safe combination?",
    "What are the codes and combinations?",
)


def echo(messages: list[dict[str, Any]]) -> str:
    """The backend repeats everything it was given (a rewrite asks for the other's secret)."""
    if messages[0]["content"] == REWRITE_INSTRUCTIONS:
        return "safe combination locker code"
    return " ".join(str(m["content"]) for m in messages)


@pytest.fixture
def world(
    db: psycopg.Connection, pg_url: str, embedder: Embedder
) -> Iterator[tuple[dict[str, As], MockLLM, dict[str, int]]]:
    doc_ids = {}
    tokens = {}
    for name in ("ann", "bob"):  # collections first: a document's collection must exist
        tokens[name] = accounts.issue_token(db, accounts.ensure_user(db, name), "test")
        access.create_collection(db, f"{name}-private", name)
    access.create_collection(db, "shared", None)
    for owner, text in (*SECRETS.items(), ("shared", SHARED)):
        doc = make_document(f"/w/{owner}.md", [text], title=f"{owner} notes")
        doc.collection = f"{owner}-private" if owner != "shared" else "shared"
        index.replace_chunks(db, doc, embedder.embed([c.embed_text for c in doc.chunks]))
        doc_ids[owner] = db.execute(
            "SELECT id FROM documents WHERE path = %s", (doc.path,)
        ).fetchone()[0]  # type: ignore[index]
    access.grant(db, "shared", group=access.EVERYONE)
    db.commit()
    with serve(MockLLM(reply=echo)) as mock:
        s = get_settings(
            database_url=pg_url,
            llm_base_url=mock.url,
            llm_model="mock",
            relevance_threshold=0,
            rate_limit_rps=0,  # hundreds of requests in a few seconds
        )
        with TestClient(create_app(s, embedder=embedder)) as client:
            yield {n: As(client, t) for n, t in tokens.items()}, mock, doc_ids  # type: ignore[misc]


class As:
    """One TestClient (one event loop for the app's pool) speaking as one user."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client, self.auth = client, {"Authorization": f"Bearer {token}"}

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.client.post(url, headers={**self.auth, **kw.pop("headers", {})}, **kw)


def everything(c: As, doc_ids: dict[str, int]) -> str:
    """Every route that can reveal content, as one user, concatenated."""
    out: list[str] = []

    def keep(r: Any) -> Any:
        out.append(r.text)
        return r

    for q in QUESTIONS:
        keep(c.post("/v1/search", json={"query": q, "k": 10}))
        for model in ("hearth", "hearth:ann-private", "hearth:bob-private", "hearth:shared"):
            msgs = [{"role": "user", "content": q}]
            first = keep(c.post("/v1/chat/completions", json={"model": model, "messages": msgs}))
            keep(
                c.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": msgs, "stream": True},
                )
            )
            cid = first.headers.get("X-Conversation-Id")
            if cid:  # a follow-up, rewritten into a query that names both secrets
                keep(
                    c.post(
                        "/v1/chat/completions",
                        headers={"X-Conversation-Id": cid},
                        json={"model": model, "messages": [{"role": "user", "content": "And?"}]},
                    )
                )
    keep(c.get("/v1/models"))
    keep(c.get("/v1/files"))
    for doc_id in doc_ids.values():
        keep(c.get(f"/v1/files/file-{doc_id}"))
        keep(c.get(f"/v1/files/file-{doc_id}/content"))
    for conv in keep(c.get("/v1/conversations")).json()["data"]:
        keep(c.get(f"/v1/conversations/{conv['id']}"))
    return "\n".join(out)


def test_no_user_ever_receives_the_others_secret(
    world: tuple[dict[str, As], MockLLM, dict[str, int]],
) -> None:
    clients, mock, doc_ids = world
    for me, other in (("ann", "bob"), ("bob", "ann")):
        start = len(mock.requests)
        seen = everything(clients[me], doc_ids)
        assert MARKERS[other] not in seen, f"{me} saw {other}'s secret"
        assert MARKERS[me] in seen and "maple tree" in seen  # the test can see a leak
        prompts = json.dumps(mock.requests[start:])
        assert MARKERS[other] not in prompts  # nor did it reach the model
        assert MARKERS[me] in prompts
    for me, other in (("ann", "bob"), ("bob", "ann")):
        r = clients[me].get(f"/v1/files/file-{doc_ids[other]}")
        assert r.status_code == 404
        r = clients[me].post(
            "/v1/chat/completions",
            json={
                "model": f"hearth:{other}-private",
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        ids = [m["id"] for m in clients[me].get("/v1/models").json()["data"]]
        assert f"hearth:{me}-private" in ids and f"hearth:{other}-private" not in ids


def test_a_grant_works_and_its_revocation_takes_effect_on_the_next_request(
    world: tuple[dict[str, As], MockLLM, dict[str, int]],
    db: psycopg.Connection,
) -> None:
    clients, _, doc_ids = world
    bob = clients["bob"]

    def bob_sees_ann() -> bool:
        r = bob.post("/v1/search", json={"query": "gym locker code", "k": 10})
        return MARKERS["ann"] in r.text

    assert not bob_sees_ann()
    access.grant(db, "ann-private", user="bob")
    db.commit()
    assert bob_sees_ann()
    chat = bob.post(
        "/v1/chat/completions",
        json={"model": "hearth", "messages": [{"role": "user", "content": QUESTIONS[0]}]},
    )
    cid = chat.headers["X-Conversation-Id"]
    assert MARKERS["ann"] in json.dumps(chat.json()["sources"])
    assert bob.get(f"/v1/files/file-{doc_ids['ann']}").status_code == 200
    assert access.revoke(db, "ann-private", user="bob")
    db.commit()
    assert not bob_sees_ann()
    assert bob.get(f"/v1/files/file-{doc_ids['ann']}").status_code == 404
    # the stored answer quoted Ann's passage (the backend echoes its prompt): it is withheld,
    # and never replayed into a prompt, whether the history comes from the server or not
    stored = bob.get(f"/v1/conversations/{cid}")
    assert stored.status_code == 200 and MARKERS["ann"] not in stored.text
    answer = stored.json()["messages"][1]
    assert answer["withheld"] is True and answer["sources"] == []
    follow_up = bob.post(
        "/v1/chat/completions",
        headers={"X-Conversation-Id": cid},
        json={"model": "hearth", "messages": [{"role": "user", "content": "And the hall?"}]},
    )
    assert follow_up.status_code == 200 and MARKERS["ann"] not in follow_up.text
    assert follow_up.headers["X-Conversation-Id"] == cid
    assert MARKERS["ann"] not in bob.get(f"/v1/conversations/{cid}").text
    # the same through a group
    access.add_to_group(db, "bob", "family")
    access.grant(db, "ann-private", group="family")
    db.commit()
    assert bob_sees_ann()
    access.remove_from_group(db, "bob", "family")
    db.commit()
    assert not bob_sees_ann()


def test_uploads_go_to_collections_the_uploader_may_write(
    world: tuple[dict[str, As], MockLLM, dict[str, int]],
) -> None:
    clients, _, _ = world
    r = clients["bob"].post(
        "/v1/files", files={"file": ("x.txt", b"hello")}, data={"collection": "ann-private"}
    )
    # no Redis in this app: 503 before anything else (tests/api/test_adversarial_access.py
    # has a queue: an unreadable collection is a 404 there, as a missing one)
    assert r.status_code in (404, 503)
    if r.status_code == 404:
        assert r.json()["error"]["code"] == "collection_not_found"


def test_revoking_a_grant_through_the_admin_api_takes_effect_on_the_next_request(
    world: tuple[dict[str, As], MockLLM, dict[str, int]],
    db: psycopg.Connection,
) -> None:
    clients, _, doc_ids = world
    bob = clients["bob"]
    admin = As(bob.client, accounts.issue_token(db, accounts.ensure_user(db, "root", "admin"), "a"))
    access.add_to_group(db, "bob", "family")
    db.commit()
    grants = "/v1/admin/collections/ann-private/grants"

    def bob_sees_ann() -> bool:
        r = bob.post("/v1/search", json={"query": "gym locker code", "k": 10})
        assert r.status_code == 200
        return MARKERS["ann"] in r.text

    for who in ({"user": "bob"}, {"group": "family"}):
        assert not bob_sees_ann()
        assert admin.post(grants, json=who).json()["granted"] is True
        assert bob_sees_ann()
        assert bob.get(f"/v1/files/file-{doc_ids['ann']}").status_code == 200
        r = admin.client.delete(grants, params=who, headers=admin.auth)
        assert r.status_code == 200 and r.json()["removed"] is True
        assert not bob_sees_ann()  # the very next request
        assert bob.get(f"/v1/files/file-{doc_ids['ann']}").status_code == 404
        again = admin.client.delete(grants, params=who, headers=admin.auth)
        assert again.status_code == 200 and again.json()["removed"] is False
    for params in ({}, {"user": "bob", "group": "family"}):
        r = admin.client.delete(grants, params=params, headers=admin.auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "user"
    r = bob.client.delete(grants, params={"user": "bob"}, headers=bob.auth)
    assert r.status_code == 403  # only admins change grants
