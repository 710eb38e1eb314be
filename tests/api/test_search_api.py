"""POST /v1/search and POST /v1/embeddings on the real app and a real PostgreSQL: auth, shapes,
filters, OpenAI-shaped errors, and the official openai client against /v1/embeddings."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from retrieval import index
from retrieval.rerank import load_reranker
from tests.factories import HashEmbedder, make_cross_encoder, make_document

EMB = HashEmbedder()


class LimitedEmbedder(HashEmbedder):
    max_tokens = 8


def make_client(db: psycopg.Connection, pg_url: str, **settings: object) -> TestClient:
    for path, collection, text in (
        ("/w/boiler.md", "house", "The boiler error code E-4471 means the pressure sensor failed."),
        ("/w/garden.md", "house", "Tomatoes need full sun and watering every morning."),
        ("/w/work/report.pdf", "work", "The quarterly boiler report for the office building."),
    ):
        doc = make_document(path, [text], title=path.rsplit("/", 1)[-1])
        doc.collection = collection
        doc.mime = "application/pdf" if path.endswith(".pdf") else "text/markdown"
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    app = create_app(get_settings(database_url=pg_url, **settings), embedder=LimitedEmbedder())
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def client(db: psycopg.Connection, pg_url: str) -> Iterator[TestClient]:
    with make_client(db, pg_url) as c:
        yield c


def assert_openai_error(resp, status: int, param: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param
    return err


def test_search_needs_a_token(client: TestClient) -> None:
    for path, body in (("/v1/search", {"query": "boiler"}), ("/v1/embeddings", {"input": "x"})):
        resp = client.post(path, json=body, headers={"Authorization": ""})
        assert assert_openai_error(resp, 401)["type"] == "authentication_error"
        resp = client.post(path, json=body, headers={"Authorization": "Bearer nope"})
        assert_openai_error(resp, 401)


def test_search_returns_passages_with_their_source(client: TestClient) -> None:
    resp = client.post("/v1/search", json={"query": "E-4471", "k": 2})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list" and body["mode"] == "hybrid"
    top = body["data"][0]
    assert top["path"] == "/w/boiler.md" and top["rank"] == 1 and top["score"] > 0
    assert set(top) >= {
        "document_id", "chunk_id", "title", "page", "heading_path", "char_start", "char_end",
        "text", "collection",
    }  # fmt: skip
    assert len(body["data"]) <= 2


def test_search_modes_and_filters(client: TestClient) -> None:
    def found(**body: object) -> list[str]:
        resp = client.post("/v1/search", json={"query": "boiler", "k": 10, **body})
        assert resp.status_code == 200, resp.text
        return [p["path"] for p in resp.json()["data"]]

    assert set(found(mode="lexical")) == {"/w/boiler.md", "/w/work/report.pdf"}
    assert len(found(mode="dense")) == 3
    assert found(filters={"collections": ["work"]}) == ["/w/work/report.pdf"]
    assert found(filters={"file_types": ["md"]}, mode="lexical") == ["/w/boiler.md"]
    assert found(filters={"path_prefix": "/w/work/"}) == ["/w/work/report.pdf"]
    assert found(filters={"modified_after": "2100-01-01T00:00:00Z"}) == []
    assert found(filters={"metadata": {"missing": True}}) == []


def test_search_errors_are_openai_shaped(client: TestClient) -> None:
    assert_openai_error(client.post("/v1/search", json={"query": "x", "k": 0}), 422, "k")
    assert_openai_error(client.post("/v1/search", json={"query": ""}), 422, "query")
    assert_openai_error(client.post("/v1/search", json={"query": "x", "mode": "fuzzy"}), 422)
    resp = client.post("/v1/search", json={"query": "x", "filters": {"colection": ["a"]}})
    assert_openai_error(resp, 422)
    err = assert_openai_error(client.post("/v1/search", json={"query": "x", "rerank": True}), 400)
    assert err["code"] == "rerank_unavailable"


def test_embeddings_in_openai_shape(client: TestClient) -> None:
    resp = client.post("/v1/embeddings", json={"input": "boiler pressure", "model": "hearth"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list" and body["model"] == "hearth"
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    [item] = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert np.allclose(item["embedding"], EMB.embed(["boiler pressure"])[0], atol=1e-6)

    resp = client.post(
        "/v1/embeddings",
        json={"input": ["a b", "c"], "model": "test-hash", "encoding_format": "base64"},
    )
    body = resp.json()
    assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"]["total_tokens"] == 3
    vec = np.frombuffer(base64.b64decode(body["data"][1]["embedding"]), dtype="<f4")
    assert np.allclose(vec, EMB.embed(["c"])[0])


def test_embeddings_errors(client: TestClient) -> None:
    err = assert_openai_error(
        client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"}),
        404,
        "model",
    )
    assert err["code"] == "model_not_found"
    assert_openai_error(client.post("/v1/embeddings", json={"input": [], "model": "hearth"}), 400)
    assert_openai_error(client.post("/v1/embeddings", json={"input": [""], "model": "hearth"}), 400)
    assert_openai_error(
        client.post("/v1/embeddings", json={"input": [[1, 2]], "model": "hearth"}), 400, "input"
    )
    too_long = " ".join(["word"] * 9)
    err = assert_openai_error(
        client.post("/v1/embeddings", json={"input": too_long, "model": "hearth"}), 400, "input"
    )
    assert err["code"] == "context_length_exceeded"
    assert_openai_error(
        client.post("/v1/embeddings", json={"input": "x", "model": "hearth", "dimensions": 3}),
        400,
        "dimensions",
    )
    assert_openai_error(client.post("/v1/embeddings", json={"model": "hearth"}), 422, "input")


def test_the_openai_client_reads_our_embeddings(client: TestClient) -> None:
    from openai import OpenAI

    token = client.headers["Authorization"].removeprefix("Bearer ")
    sdk = OpenAI(base_url=f"{client.base_url}/v1", api_key=token, http_client=client)
    resp = sdk.embeddings.create(model="hearth", input=["tomato watering", "boiler"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == EMB.dim
    assert np.allclose(resp.data[1].embedding, EMB.embed(["boiler"])[0], atol=1e-6)
    assert resp.usage.prompt_tokens == 3


def test_search_with_a_configured_cross_encoder(
    db: psycopg.Connection, pg_url: str, tmp_path: Path
) -> None:
    model = make_cross_encoder(tmp_path / "ce")
    with make_client(db, pg_url, rerank_model=str(model)) as c:
        default = c.post("/v1/search", json={"query": "boiler", "k": 3})
        off = c.post("/v1/search", json={"query": "boiler", "k": 3, "rerank": False})
    assert default.status_code == off.status_code == 200
    hits = default.json()["data"]
    scores = [p["score"] for p in hits]
    assert len(hits) == 3 and scores == sorted(scores, reverse=True)
    # the cross-encoder's own scores for what it read (the context line, then the text)
    expected = load_reranker(str(model)).score(
        "boiler", [f"{p['title']}\n{p['text']}" for p in hits]
    )
    assert scores == pytest.approx([float(x) for x in expected], abs=1e-5)
    assert [p["score"] for p in off.json()["data"]] != scores


def test_a_repeated_query_is_embedded_once() -> None:
    import asyncio

    from api.search import query_vector

    class Counting(HashEmbedder):
        calls = 0

        def embed(self, texts):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().embed(texts)

    emb = Counting()
    first = asyncio.run(query_vector(emb, "where is the boiler manual?"))
    again = asyncio.run(query_vector(emb, "where is the boiler manual?"))
    other = asyncio.run(query_vector(emb, "something else"))
    assert Counting.calls == 2
    assert np.array_equal(first, again) and not np.array_equal(first, other)
