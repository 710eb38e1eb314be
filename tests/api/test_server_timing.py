"""The Server-Timing header (api.timing) on the real app, a real PostgreSQL and the packaged
MiniLM: where a search's or a chat turn's time went, stage by stage, for the signed-in caller of
a successful request, and nothing for anyone else (no header on any error, no caller text in it).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from retrieval import index
from tests.e2e.stack import llm_model_dir
from tests.factories import make_document
from tests.mock_llm import MockLLM

ENTRY = re.compile(r"^([a-z][a-z-]*);dur=(\d+\.\d)$")
SEARCH_STAGES = {"auth", "access", "embed", "embed-model", "search", "total"}
CHAT_STAGES = {"auth", "open", "embed", "embed-model", "search", "ground", "answer", "total"}
DOCS = (
    ("/w/boiler.md", "house", "The boiler error code E-4471 means the pressure sensor failed."),
    ("/w/garden.md", "house", "Tomatoes need full sun and watering every morning."),
)


def stages(header: str) -> dict[str, float]:
    """The header's entries, each checked to be a known name and a finite duration in ms."""
    out: dict[str, float] = {}
    for item in header.split(", "):
        found = ENTRY.match(item)
        assert found, f"not a plain 'name;dur=ms' entry: {item!r} in {header!r}"
        name, ms = found[1], float(found[2])
        assert name not in out and math.isfinite(ms) and ms >= 0
        out[name] = ms
    return out


def check_nesting(got: dict[str, float], top: tuple[str | tuple[str, ...], ...]) -> None:
    """The top-level stages ran one after another inside `total` (a tuple of stages ran side
    by side: the longest counts), and the model's own time is part of `embed` (each entry is
    rounded to 0.1 ms: up to 0.05 off, the total too)."""
    spans = [max(got.get(s, 0.0) for s in (t if isinstance(t, tuple) else (t,))) for t in top]
    assert sum(spans) <= got["total"] + 0.05 * (len(top) + 1.01), got
    if "embed" in got:
        assert got["embed-model"] <= got["embed"] + 0.1, got


@pytest.fixture
def seeded(db: psycopg.Connection, embedder: Any) -> tuple[str, str]:
    """DOCS indexed with the real model; an admin token and a user token (who reads nothing)."""
    for path, collection, text in DOCS:
        doc = make_document(path, [text], title=path.rsplit("/", 1)[-1])
        doc.collection = collection
        index.replace_chunks(db, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    admin = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    other = accounts.issue_token(db, accounts.ensure_user(db, "bob", "user"), "test")
    db.commit()
    return admin, other


@pytest.fixture
def client(pg_url: str, embedder: Any, mock: MockLLM, seeded: tuple[str, str]) -> Iterator[Any]:
    settings = get_settings(
        database_url=pg_url,
        llm_base_url=mock.url,
        llm_model="mock",
        llm_tokenizer=llm_model_dir(),
        relevance_threshold=0,
        rate_limit_rps=0,
    )
    with TestClient(create_app(settings, embedder=embedder)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_search_says_where_its_time_went(client: TestClient, seeded: tuple[str, str]) -> None:
    admin, _ = seeded
    resp = client.post("/v1/search", json={"query": "E-4471 pressure"}, headers=bearer(admin))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"][0]["path"] == "/w/boiler.md"
    got = stages(resp.headers["Server-Timing"])
    assert set(got) == SEARCH_STAGES
    # the readable collections are looked up while the question embeds (api.routes.search)
    check_nesting(got, ("auth", ("access", "embed"), "search"))
    # the same question again: its vector comes from the cache, so no embedding is timed
    again = client.post("/v1/search", json={"query": "E-4471 pressure"}, headers=bearer(admin))
    assert set(stages(again.headers["Server-Timing"])) == SEARCH_STAGES - {"embed", "embed-model"}
    lexical = client.post(
        "/v1/search", json={"query": "tomatoes", "mode": "lexical"}, headers=bearer(admin)
    )
    assert "embed" not in stages(lexical.headers["Server-Timing"])


def test_no_timing_for_a_refused_or_failed_request(
    client: TestClient, seeded: tuple[str, str]
) -> None:
    """An attacker learns nothing from timings: no header on a 401 (no, wrong or malformed
    token), a 422 (bad body, checked after the token), a 400 (reranking unavailable, after the
    search was prepared) or a 404, whoever asks; what the caller sends never reaches it."""
    admin, other = seeded
    query = {"query": "E-4471"}
    refusals = [
        client.post("/v1/search", json=query),
        client.post("/v1/search", json=query, headers=bearer("hearth_nope")),
        client.post("/v1/search", json=query, headers={"Authorization": "Basic eA=="}),
        client.post("/v1/search", json={"query": ""}, headers=bearer(admin)),
        client.post("/v1/search", json={**query, "k": 0}, headers=bearer(other)),
        client.post("/v1/search", json={**query, "rerank": True}, headers=bearer(admin)),
        client.post("/v1/search", json={**query, "rerank": True}, headers=bearer(other)),
        client.post(
            "/v1/chat/completions",
            json={"model": "hearth:work", "messages": [{"role": "user", "content": "E-4471"}]},
            headers=bearer(other),
        ),
    ]
    assert [r.status_code for r in refusals] == [401, 401, 401, 422, 422, 400, 400, 404]
    for resp in refusals:
        assert "server-timing" not in resp.headers, (resp.status_code, resp.text)
    # a user who is not an admin gets no timing even on a success: the dense leg's time inside
    # the server depends on other collections' vectors too (api.timing)
    empty = client.post("/v1/search", json=query, headers=bearer(other))
    assert empty.status_code == 200 and empty.json()["data"] == []
    assert "server-timing" not in empty.headers
    sneaky = {"query": 'x;dur=1, admin;desc="secret", total;dur=0'}
    resp = client.post("/v1/search", json=sneaky, headers=bearer(admin))
    assert set(stages(resp.headers["Server-Timing"])) == SEARCH_STAGES
    assert "secret" not in resp.headers["Server-Timing"]


def test_a_chat_turn_says_where_its_time_went(
    client: TestClient, seeded: tuple[str, str], mock: MockLLM, caplog: pytest.LogCaptureFixture
) -> None:
    admin, _ = seeded
    mock.reply = lambda messages: "The pressure sensor failed [1]."
    ask = {"model": "hearth", "messages": [{"role": "user", "content": "What is E-4471?"}]}
    resp = client.post("/v1/chat/completions", json=ask, headers=bearer(admin))
    assert resp.status_code == 200, resp.text
    assert resp.json()["sources"][0]["path"] == "/w/boiler.md"
    got = stages(resp.headers["Server-Timing"])
    assert set(got) == CHAT_STAGES, got
    check_nesting(got, ("auth", "open", "ground", "answer"))
    assert got["embed"] + got["search"] <= got["ground"] + 0.2, got  # both inside grounding

    # a stream's headers leave before its stages: they go to the debug log at its end
    with caplog.at_level(logging.DEBUG, logger="api.timing"):
        streamed = client.post(
            "/v1/chat/completions",
            json={**ask, "stream": True, "messages": [{"role": "user", "content": "E-4471?"}]},
            headers=bearer(admin),
        )
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert "server-timing" not in streamed.headers
    lines = [r.getMessage() for r in caplog.records if r.name == "api.timing"]
    assert len(lines) == 1 and lines[0].startswith("chat stream stages (ms): "), lines
    logged = stages(lines[0].split(": ", 1)[1])
    assert {"auth", "open", "embed", "search", "total"} <= set(logged) <= CHAT_STAGES
