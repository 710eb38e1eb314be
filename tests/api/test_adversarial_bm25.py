"""The lexical score side channel (issue 13, item 4): a user must not learn anything about
collections they cannot read from the scores of what they can. Ann records every byte she
receives from search (lexical, dense, hybrid, reranked) and chat (plain and streamed, whose
`sources` carry scores); then documents holding her query's words, and her documents' words, are
planted where she cannot read them, through every write path (COPY, INSERT ... SELECT, a move to
another collection, DELETE, ON DELETE CASCADE). She asks again after each: every byte must be the
same. A control shows each plant does move the scores of someone who can read it, so the test
can see a leak.

Real app, real PostgreSQL, the packaged embedder, a real cross-encoder for the rerank stage."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.rewrite import REWRITE_INSTRUCTIONS
from api.store import access, accounts
from core.embedder import Embedder
from core.settings import get_settings
from retrieval import documents, index
from tests.factories import make_cross_encoder, make_document
from tests.mock_llm import MockLLM, serve

QUERIES = ("boiler pressure valve", "when was the valve replaced?")
ANN = (  # one document with every query word, and one for each word alone: in hybrid mode
    # the normalised lexical scores of the middle ones depend on the words' relative weights
    "The boiler pressure valve was replaced in March; since then the boiler holds pressure.",
    "The boiler service is booked for the first Monday of October.",
    "Tyre pressure for the car is 2.4 bar at the front and 2.6 at the back.",
    "The outside tap has a valve that leaks a little every winter.",
)
SHARED = (
    "The boiler manual says: check the valve every year and bleed the radiators in autumn.",
    "Garden notes: the tomatoes by the shed want sun, water and a weekly feed.",
)
BOB = "Bob's bicycle lock combination is written inside the blue notebook."


def echo(messages: list[dict[str, Any]]) -> str:
    """The backend repeats its prompt, so the passages' order reaches the answer's bytes."""
    if messages[0]["content"] == REWRITE_INSTRUCTIONS:
        return "boiler valve"
    return " ".join(str(m["content"]) for m in messages)


def put(
    db: psycopg.Connection, embedder: Embedder, path: str, collection: str, texts: list[str]
) -> int:
    doc = make_document(path, texts, title="")
    doc.collection = collection
    doc_id = index.replace_chunks(db, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return doc_id


class As:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client, self.token = client, token

    def post(self, url: str, body: dict[str, Any], request_id: str) -> Any:
        # a fixed request id, so the X-Request-Id header is comparable too
        headers = {"Authorization": f"Bearer {self.token}", "X-Request-Id": request_id}
        return self.client.post(url, json=body, headers=headers)


_CREATED = re.compile(rb'"created":\s*\d+')


def transcript(r: Any) -> bytes:
    """The status, headers and body of one response, byte for byte, but for three values that
    change on every call and depend on no document: a completion's id (`chatcmpl-<random>`), its
    `created` time, and the id of the conversation each chat request opens (X-Conversation-Id and
    the body's `conversation_id`). Each is replaced where it occurs, so everything around it is
    still compared. The Date header is the only header left out. A stream's text is compared
    whole, not how it was cut into events: where the cuts fall depends on when the backend's tokens
    arrived (the relay sends what arrived together as one event), not on any document."""
    body: bytes = r.content
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        body = _uncut(body)
    swaps: list[tuple[bytes, bytes]] = []
    cid = r.headers.get("x-conversation-id")
    if cid:
        swaps.append((cid.encode(), b"<conversation>"))
    for m in re.finditer(rb'"id":\s*"(chatcmpl-[0-9a-f]+)"', body):
        swaps.append((m.group(1), b"<completion>"))
    head = b"\n".join(
        f"{k}: {v}".encode() for k, v in sorted(r.headers.items()) if k.lower() != "date"
    )
    out = f"{r.status_code}\n".encode() + head + b"\n\n" + body
    for old, new in swaps:
        out = out.replace(old, new)
    return _CREATED.sub(b'"created":0', out)


def _uncut(body: bytes) -> bytes:
    """A stream's events with its text deltas joined: each event with its `content` taken out
    (runs of events left alike by that become one), then the whole text. Every other byte of
    every event stays compared."""
    skeletons: list[bytes] = []
    text: list[str] = []
    for line in body.split(b"\n"):
        event = line
        if line.startswith(b"data: {"):
            parsed = json.loads(line[6:])
            for choice in parsed.get("choices") or ():
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    text.append(delta.pop("content"))
            event = b"data: " + json.dumps(parsed, sort_keys=True).encode()
        if event.strip() and (not skeletons or skeletons[-1] != event):
            skeletons.append(event)
    return b"\n".join(skeletons) + b"\n\ntext: " + "".join(text).encode()


def everything(ann: dict[str, As]) -> dict[str, bytes]:
    """Every response that carries a score, as Ann, keyed by what was asked."""
    seen: dict[str, bytes] = {}

    def ask(key: str, who: As, url: str, body: dict[str, Any]) -> None:
        r = who.post(url, body, request_id=f"req{len(seen)}")
        assert r.status_code == 200, r.text
        seen[key] = transcript(r)

    for q in QUERIES:
        for mode in ("lexical", "dense", "hybrid"):
            body = {"query": q, "k": 10, "mode": mode, "rerank": False}
            ask(f"search {mode} {q}", ann["plain"], "/v1/search", body)
            only = {**body, "filters": {"collections": ["shared"]}}
            ask(f"search {mode} shared {q}", ann["plain"], "/v1/search", only)
        reranked = {"query": q, "k": 10, "mode": "hybrid", "rerank": True}
        ask(f"search rerank {q}", ann["rerank"], "/v1/search", reranked)
        for app in ("plain", "rerank"):
            for model in ("hearth", "hearth:shared"):
                for stream in (False, True):
                    chat = {
                        "model": model,
                        "messages": [{"role": "user", "content": q}],
                        "stream": stream,
                    }
                    ask(f"chat {app} {model} {stream} {q}", ann[app], "/v1/chat/completions", chat)
    return seen


@pytest.fixture
def world(
    db: psycopg.Connection, pg_url: str, embedder: Embedder, tmp_path: Path
) -> Iterator[tuple[dict[str, dict[str, As]], dict[str, int]]]:
    tokens = {n: accounts.issue_token(db, accounts.ensure_user(db, n), "t") for n in ("ann", "bob")}
    access.create_collection(db, "ann-private", "ann")
    access.create_collection(db, "bob-private", "bob")
    access.create_collection(db, "shared", None)
    access.create_collection(db, "family", None)  # ownerless: admins only; Ann is not one
    access.grant(db, "shared", group=access.EVERYONE)
    db.commit()
    ids = {
        **{
            f"ann{i}": put(db, embedder, f"/u/ann/note{i}.md", "ann-private", [text])
            for i, text in enumerate(ANN)
        },
        "shared": put(db, embedder, "/w/shared/manual.md", "shared", list(SHARED)),
        "bob": put(db, embedder, "/u/bob/notes.md", "bob-private", [BOB]),
    }
    cross_encoder = make_cross_encoder(tmp_path / "ce")
    with serve(MockLLM(reply=echo)) as mock:
        common: dict[str, Any] = dict(
            database_url=pg_url,
            llm_base_url=mock.url,
            llm_model="mock",
            relevance_threshold=0,
            rate_limit_rps=0,
        )
        plain = create_app(get_settings(**common), embedder=embedder)
        rerank = create_app(
            get_settings(**common, rerank_model=str(cross_encoder)), embedder=embedder
        )
        with TestClient(plain) as c1, TestClient(rerank) as c2:
            users = {n: {"plain": As(c1, t), "rerank": As(c2, t)} for n, t in tokens.items()}
            yield users, ids


def scores(who: As, query: str) -> dict[str, float]:
    r = who.post("/v1/search", {"query": query, "k": 10, "mode": "lexical"}, "control")
    assert r.status_code == 200, r.text
    return {p["path"]: p["score"] for p in r.json()["data"]}


def test_no_byte_ann_receives_depends_on_what_she_cannot_read(
    db: psycopg.Connection,
    embedder: Embedder,
    world: tuple[dict[str, dict[str, As]], dict[str, int]],
) -> None:
    users, ids = world
    ann, bob = users["ann"], users["bob"]["plain"]
    before = everything(ann)
    # Ann's view is not empty: her document and the shared one are found, with scores
    assert b"/u/ann/note0.md" in before["search lexical boiler pressure valve"]
    assert b"/w/shared/manual.md" in before["search lexical boiler pressure valve"]
    assert b'"score"' in before["chat plain hearth False boiler pressure valve"]

    def unchanged(step: str) -> None:
        after = everything(ann)
        changed = [k for k in before if after[k] != before[k]]
        assert not changed, f"after {step}, Ann's responses changed: {sorted(changed)}"

    # 1. COPY: Bob's private note full of Ann's query words
    bob_before = scores(bob, QUERIES[0])
    planted = put(
        db,
        embedder,
        "/u/bob/boiler.md",
        "bob-private",
        ["boiler boiler pressure valve valve valve: the boiler secret is 7781"] * 3,
    )
    assert scores(bob, QUERIES[0])["/w/shared/manual.md"] != bob_before["/w/shared/manual.md"]
    unchanged("a COPY into bob-private")

    # 2. INSERT ... SELECT: the shared manual copied into a collection only admins read
    documents.copy_document(
        db, ids["shared"], "/w/family/manual.md", collection="family", source="watch",
        size=1, mtime=1.0,
    )  # fmt: skip
    db.commit()
    unchanged("an INSERT ... SELECT into family")

    # 3. a move (documents.collection is updated): Bob's planted note goes to family
    bob_before = scores(bob, QUERIES[0])
    documents.rename(db, planted, "/w/family/boiler.md", collection="family", size=1, mtime=1.0)
    db.commit()
    assert scores(bob, QUERIES[0])["/w/shared/manual.md"] != bob_before["/w/shared/manual.md"]
    unchanged("a move from bob-private to family")

    # 4. many words that are not in the query: the corpus size and average length move
    put(db, embedder, "/u/bob/long.md", "bob-private", ["wardrobe hinge " * 200] * 4)
    unchanged("a long document in bob-private")

    # 5. DELETE, and ON DELETE CASCADE
    documents.mark_deleted(db, "/u/bob/long.md")
    db.commit()
    db.execute("DELETE FROM documents WHERE path = '/w/family/boiler.md'")
    db.commit()
    unchanged("deletes")
