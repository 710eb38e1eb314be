"""POST /v1/search starts the query's embedding before it looks up the caller's readable
collections, so the two overlap (api.search.early_vector); an embedding the request no longer
needs is cancelled or its error seen, never left behind."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.errors import APIError
from api.search import SearchRequest, early_vector, run_search
from api.store import access, accounts
from core.settings import Settings, get_settings
from retrieval import index
from tests.factories import HashEmbedder, make_document

WAIT_S = 10.0  # a deadline, never a pause: every wait below ends as soon as its event is set


class GatedEmbedder(HashEmbedder):
    """Blocks a query holding `gated` until released; notes when it started and each call."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if any("gated" in t for t in texts):
            self.started.set()
            if not self.release.wait(WAIT_S):
                raise AssertionError("the embedding was never released")
        return super().embed(texts)


@pytest.fixture
def gated() -> GatedEmbedder:
    return GatedEmbedder()


@pytest.fixture
def client(db: psycopg.Connection, pg_url: str, gated: GatedEmbedder) -> Iterator[TestClient]:
    doc = make_document("/w/boiler.md", ["The boiler error code E-4471: the gated valve."])
    index.replace_chunks(db, doc, HashEmbedder().embed([c.embed_text for c in doc.chunks]))
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    app = create_app(get_settings(database_url=pg_url), embedder=gated)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_access_is_looked_up_while_the_query_embeds(
    client: TestClient, gated: GatedEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The readable collections are read while the model works on the question: the lookup
    finds the embedding under way (before, it ran first and waited WAIT_S for it in vain)."""
    real = access.readable
    found_running: list[bool] = []

    async def readable(conn: psycopg.AsyncConnection, user: accounts.User) -> tuple[str, ...]:
        found_running.append(await asyncio.to_thread(gated.started.wait, WAIT_S))
        gated.release.set()
        return await real(conn, user)

    monkeypatch.setattr(access, "readable", readable)
    resp = client.post("/v1/search", json={"query": "gated valve", "k": 3})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"][0]["path"] == "/w/boiler.md"
    assert found_running == [True]


def test_a_lexical_search_embeds_nothing(client: TestClient, gated: GatedEmbedder) -> None:
    before = len(gated.calls)
    resp = client.post("/v1/search", json={"query": "boiler E-4471", "mode": "lexical"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]
    assert gated.calls[before:] == []


def test_a_request_failing_before_its_search_cancels_the_embedding(
    client: TestClient, gated: GatedEmbedder
) -> None:
    """rerank asked of a server without RERANK_MODEL is a 400 while the question still embeds:
    the embedding is cancelled (its thread's answer is dropped, or, on a busy machine, the
    thread never starts it), and the next search works."""
    resp = client.post("/v1/search", json={"query": "gated one", "rerank": True})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "rerank_unavailable"
    # released at once: whether the thread got to the gated question before the 400 is a race
    # (a loaded CI machine lost it); either way the next search must not wait on it
    gated.release.set()
    resp = client.post("/v1/search", json={"query": "boiler", "k": 1})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"][0]["path"] == "/w/boiler.md"


class FailingEmbedder(HashEmbedder):
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("model failed")


def test_an_unused_failed_embedding_is_not_left_unobserved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The embedding failed, but the request failed first for another reason (its 400): the
    embedding's error is seen, so asyncio logs no 'Task exception was never retrieved'."""

    async def scenario() -> None:
        req = SearchRequest(query="anything", rerank=True)
        early = early_vector(FailingEmbedder(), req)
        assert early is not None
        await asyncio.wait([early.task], timeout=WAIT_S)
        assert early.task.done()
        with pytest.raises(APIError, match="Reranking is not configured"):
            await run_search(None, FailingEmbedder(), Settings(), req, early=early)  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()
    assert "never retrieved" not in caplog.text
