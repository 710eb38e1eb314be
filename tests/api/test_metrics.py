"""/metrics, /health and /ready on the real app, a real PostgreSQL, a real (embedded) Redis and a
scripted LLM backend on a real socket: what is counted after chats and searches, what is read when
scraped, who may scrape, and liveness against readiness while the backend is down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.routes import health
from api.store import accounts
from core.embedded import EmbeddedRedis
from core.migrate import Migration
from core.settings import get_settings
from retrieval import index
from tests.api.test_chat_api import client as chat_client
from tests.factories import HashEmbedder, make_document
from tests.mock_llm import MockLLM
from workers.celery_app import INGEST_QUEUE, INTERACTIVE_QUEUE, TASK_INGEST, create_celery

EMB = HashEmbedder()
CHAT = "/v1/chat/completions"
DOCS = (
    ("/w/boiler.md", "The boiler error code E-4471 means the pressure sensor failed."),
    ("/w/garden.md", "Tomatoes need full sun and watering every morning."),
)


@pytest.fixture
def tokens(db: psycopg.Connection) -> dict[str, str]:
    for path, text in DOCS:
        doc = make_document(path, [text], title=path.rsplit("/", 1)[-1])
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    admin = accounts.issue_token(db, accounts.ensure_user(db, "root", "admin"), "admin")
    user = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "ann")
    db.commit()
    return {"admin": admin, "user": user}


def ask(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "hearth", "messages": [{"role": "user", "content": question}], **extra}


def client(pg_url: str, mock: MockLLM, token: str | None = None, **settings: Any) -> TestClient:
    return chat_client(pg_url, token, mock, **{"query_rewrite": False, **settings})


def scrape(c: TestClient, token: str | None = None) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of GET /metrics as {(name, labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = c.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_chats_and_a_search_are_counted(pg_url: str, tokens: dict[str, str], mock: MockLLM) -> None:
    with client(pg_url, mock, tokens["admin"]) as c:
        assert c.post(CHAT, json=ask("What does E-4471 mean?")).status_code == 200
        assert c.post(CHAT, json=ask("And the boiler error?")).status_code == 200
        r = c.post(CHAT, json=ask("E-4471?", stream=True))
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        assert c.post("/v1/search", json={"query": "tomatoes"}).status_code == 200
        assert c.post("/v1/search", json={"query": ""}).status_code == 422
        assert c.get("/v1/files/file-999").status_code == 404
        assert c.post(CHAT, json=ask("hi"), headers={"Authorization": ""}).status_code == 401
        assert c.get("/no/such/page").status_code == 404
        m = scrape(c, tokens["admin"])

    requests = "hearth_http_requests_total"
    assert value(m, requests, route=CHAT, method="POST", status="200") == 3
    assert value(m, requests, route="/v1/search", method="POST", status="200") == 1
    assert value(m, requests, route="/v1/search", method="POST", status="422") == 1
    # by template, not by raw path; what no route saw (an unknown path, a 401 at the gate
    # before routing) is one label
    assert value(m, requests, route="/v1/files/{file_id}", method="GET", status="404") == 1
    assert value(m, requests, route="unmatched", method="POST", status="401") == 1
    assert value(m, requests, route="unmatched", method="GET", status="404") == 1
    routes = {dict(labels).get("route") for _, labels in m}
    assert "/v1/files/file-999" not in routes and "/no/such/page" not in routes
    latency = "hearth_http_request_duration_seconds_count"
    assert value(m, latency, route=CHAT, method="POST", status="200") == 3

    assert value(m, "hearth_chat_time_to_first_token_seconds_count") == 1  # the one stream
    assert value(m, "hearth_chat_answer_duration_seconds_count", stream="false") == 2
    assert value(m, "hearth_chat_answer_duration_seconds_count", stream="true") == 1
    # the mock reports usage on non-streamed answers only: 10 prompt, 3 completion tokens each
    assert value(m, "hearth_chat_prompt_tokens_total") == 2 * 10
    assert value(m, "hearth_chat_completion_tokens_total") == 2 * 3
    assert value(m, "hearth_retrieval_duration_seconds_count", caller="chat") == 3
    assert value(m, "hearth_retrieval_duration_seconds_count", caller="search") == 1
    assert value(m, "hearth_llm_errors_total", code="llm_busy", status="503") == 0


def test_backend_errors_are_counted_by_code(
    pg_url: str, tokens: dict[str, str], mock: MockLLM
) -> None:
    mock.status = 503
    with client(pg_url, mock, tokens["admin"]) as c:
        assert c.post(CHAT, json=ask("E-4471?")).status_code == 503
        assert c.post(CHAT, json=ask("E-4471?", stream=True)).status_code == 503
        m = scrape(c, tokens["admin"])
    assert value(m, "hearth_llm_errors_total", code="llm_busy", status="503") == 2
    assert value(m, "hearth_http_requests_total", route=CHAT, method="POST", status="503") == 2
    assert value(m, "hearth_chat_prompt_tokens_total") == 0


def test_each_app_counts_alone(pg_url: str, tokens: dict[str, str], mock: MockLLM) -> None:
    with client(pg_url, mock, tokens["admin"]) as c:
        c.post("/v1/search", json={"query": "tomatoes"})
    with client(pg_url, mock, tokens["admin"]) as c:
        m = scrape(c, tokens["admin"])
    assert value(m, "hearth_retrieval_duration_seconds_count", caller="search") == 0


def test_documents_by_status_match_the_database(
    db: psycopg.Connection, pg_url: str, tokens: dict[str, str], mock: MockLLM
) -> None:
    db.execute("UPDATE documents SET status = 'failed' WHERE path = '/w/garden.md'")
    db.commit()
    rows = db.execute("SELECT status, count(*) FROM documents GROUP BY status").fetchall()
    assert dict(rows) == {"indexed": 1, "failed": 1}
    with client(pg_url, mock, tokens["admin"]) as c:
        m = scrape(c, tokens["admin"])
    gauges = {
        dict(labels)["status"]: v for (name, labels), v in m.items() if name == "hearth_documents"
    }
    assert {s: n for s, n in gauges.items() if n} == dict(rows)
    assert gauges["queued"] == 0  # every live status is present, at 0 when none


def test_queue_depth_is_read_from_redis_and_tasks_carry_the_request_id(
    pg_url: str,
    tokens: dict[str, str],
    mock: MockLLM,
    broker: EmbeddedRedis,
    queue: redis.Redis,
    tmp_path: Path,
) -> None:
    settings = get_settings(redis_url=broker.url)
    celery = create_celery(settings)
    try:
        for n in range(3):
            celery.send_task(TASK_INGEST, args=[f"/w/{n}.md"], queue=INGEST_QUEUE)
        celery.send_task(TASK_INGEST, args=["/w/urgent.md"], queue=INGEST_QUEUE, priority=9)
    finally:
        celery.close()
    with client(
        pg_url, mock, tokens["admin"], redis_url=broker.url, hearth_watch_dir=str(tmp_path / "w")
    ) as c:
        r = c.post(
            "/v1/files",
            files={"file": ("notes.md", b"# Notes\n\nHello.\n", "text/markdown")},
            headers={"X-Request-Id": "upload-42"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["X-Request-Id"] == "upload-42"
        m = scrape(c, tokens["admin"])
    assert value(m, "hearth_ingest_queue_depth", queue="ingest") == 4
    assert value(m, "hearth_ingest_queue_depth", queue="interactive") == 1
    [message] = queue.lrange(INTERACTIVE_QUEUE, 0, -1)  # type: ignore[misc]
    assert json.loads(message)["headers"]["request_id"] == "upload-42"


def test_metrics_need_an_admin_unless_public(
    pg_url: str, tokens: dict[str, str], mock: MockLLM
) -> None:
    with client(pg_url, mock) as c:
        r = c.get("/metrics")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = c.get("/metrics", headers={"Authorization": f"Bearer {tokens['user']}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_only"
        assert "hearth_" not in r.text
        assert (
            "hearth_http_requests_total"
            in c.get("/metrics", headers={"Authorization": f"Bearer {tokens['admin']}"}).text
        )
    with client(pg_url, mock, metrics_public=True) as c:
        r = c.get("/metrics")
        assert r.status_code == 200 and "hearth_documents" in r.text


def test_health_is_liveness_and_ready_names_the_llm_when_it_is_down(
    pg_url: str, tokens: dict[str, str], mock: MockLLM
) -> None:
    mock.status = 503
    with client(pg_url, mock) as c:
        r = c.get("/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = c.get("/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["failing"] == ["llm"]
        assert body["checks"]["llm"].startswith("error")
        assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"
        mock.status = 200
        r = c.get("/ready")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ok",
            "checks": {
                "database": "ok",
                "redis": "not configured",
                "llm": "ok",
                "migrations": "ok",
            },
        }


def test_ready_names_pending_migrations(
    pg_url: str, tokens: dict[str, str], mock: MockLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = health.available()
    newer = Migration(real[-1].version + 1, "from_the_future", "SELECT 1")
    monkeypatch.setattr(health, "available", lambda: [*real, newer])
    health.known_migrations.cache_clear()
    try:
        with client(pg_url, mock) as c:
            r = c.get("/ready")
    finally:
        health.known_migrations.cache_clear()
    assert r.status_code == 503
    assert r.json()["failing"] == ["migrations"]
    assert r.json()["checks"]["migrations"] == f"pending: {newer.version:04d}_from_the_future"


def test_ready_names_redis_when_it_is_unreachable(
    pg_url: str, tokens: dict[str, str], mock: MockLLM, tmp_path: Path
) -> None:
    gone = f"redis+socket://{tmp_path / 'no-redis.sock'}"
    with client(pg_url, mock, redis_url=gone) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["failing"] == ["redis"]
        assert c.get("/health").status_code == 200
