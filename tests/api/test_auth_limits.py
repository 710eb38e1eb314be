"""Tokens from creation to revocation and expiry, the admin API, rate limits (429 with
Retry-After, in Redis), the concurrent-stream limit, the request log and CORS — on the real app,
a real PostgreSQL and a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from core.embedded import EmbeddedRedis
from core.settings import get_settings
from tests.conftest import free_port
from tests.factories import HashEmbedder
from tests.mock_llm import MockLLM

EMB = HashEmbedder()
PLAIN = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    redis = EmbeddedRedis(tmp_path / "redis")
    yield redis.start()
    redis.stop()


def app_for(pg_url: str, mock: MockLLM, **kw: Any) -> Any:
    s = get_settings(database_url=pg_url, llm_base_url=mock.url, llm_model="mock", **kw)
    return create_app(s, embedder=EMB)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_lifecycle(db: psycopg.Connection, pg_url: str, mock: MockLLM) -> None:
    ann = accounts.ensure_user(db, "ann")
    token = accounts.issue_token(db, ann, "phone")
    old = accounts.issue_token(db, ann, "old", datetime.now(UTC) - timedelta(seconds=1))
    db.commit()
    stored = db.execute("SELECT token_hash, prefix FROM tokens ORDER BY id").fetchall()
    assert all(token not in row[0] and len(row[0]) == 64 for row in stored)  # SHA-256 only
    assert token.startswith("hearth_") and len(token) >= 7 + 43
    with TestClient(app_for(pg_url, mock)) as c:
        assert c.get("/v1/models", headers=bearer(token)).status_code == 200

        def used() -> bool:  # recorded just after the response (api.store.writer)
            row = db.execute("SELECT last_used_at FROM tokens WHERE description = 'phone'")
            found = row.fetchone()
            db.rollback()
            return found is not None and found[0] is not None

        deadline = time.monotonic() + 10
        while not used():
            assert time.monotonic() < deadline, "the token's last use was not recorded"
            time.sleep(0.02)
        for headers, code in (
            ({}, "missing_api_key"),
            (bearer(old), "invalid_api_key"),  # expired
            (bearer(token + "x"), "invalid_api_key"),
            (bearer("hearth_" + "A" * 43), "invalid_api_key"),
            ({"Authorization": f"Basic {token}"}, "invalid_api_key"),
            ({"Authorization": "Bearer"}, "invalid_api_key"),
        ):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == code, headers
            assert r.headers["WWW-Authenticate"] == "Bearer"
        token_id = db.execute("SELECT id FROM tokens WHERE description = 'phone'").fetchone()
        assert token_id is not None and accounts.revoke_token(db, token_id[0])
        db.commit()
        assert c.get("/v1/models", headers=bearer(token)).status_code == 401  # the next request


def test_the_stored_digest_is_compared_in_constant_time(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real = accounts.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(accounts.hmac, "compare_digest", spy)
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "t")
    db.commit()
    with TestClient(app_for(pg_url, mock)) as c:
        assert c.get("/v1/models", headers=bearer(token)).status_code == 200
    assert calls and calls[0][0] == calls[0][1]


def test_admin_api_manages_users_tokens_and_grants(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    admin = accounts.issue_token(db, accounts.ensure_user(db, "root", "admin"), "admin")
    user = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "ann")
    db.commit()
    with TestClient(app_for(pg_url, mock)) as c:
        r = c.get("/v1/admin/users", headers=bearer(user))
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_only"
        h = bearer(admin)
        created = c.post("/v1/admin/users", json={"name": "bob"}, headers=h)
        assert created.status_code == 200 and created.json()["collection"] == "user-bob"
        assert c.post("/v1/admin/users", json={"name": "bob"}, headers=h).status_code == 409
        issued = c.post(
            "/v1/admin/users/bob/tokens", json={"description": "laptop"}, headers=h
        ).json()
        bob = issued["token"]
        assert c.get("/v1/models", headers=bearer(bob)).status_code == 200
        listed = c.get("/v1/admin/tokens", headers=h).json()["data"]
        assert bob not in str(listed) and any(t["description"] == "laptop" for t in listed)
        r = c.post("/v1/admin/collections", json={"name": "family", "owner": "ann"}, headers=h)
        assert r.status_code == 200
        r = c.post("/v1/admin/collections/family/grants", json={"user": "bob"}, headers=h)
        assert r.status_code == 200
        cols = c.get("/v1/admin/collections", headers=h).json()["data"]
        family = {"name": "family", "owner": "ann", "readers": ["bob"], "documents": 0}
        assert {**family, "personal": False} in cols
        assert "hearth:family" in str(c.get("/v1/models", headers=bearer(bob)).json())
        r = c.post("/v1/admin/collections/nope/grants", json={"user": "bob"}, headers=h)
        assert r.status_code == 404
        token_id = next(t["id"] for t in listed if t["description"] == "laptop")
        assert c.delete(f"/v1/admin/tokens/{token_id}", headers=h).json()["revoked"] is True
        assert c.get("/v1/models", headers=bearer(bob)).status_code == 401
        assert c.patch("/v1/admin/users/ann", json={"disabled": True}, headers=h).status_code == 200
        assert c.get("/v1/models", headers=bearer(user)).status_code == 401


@pytest.mark.parametrize("with_redis", [True, False])
def test_rate_limit_is_429_with_retry_after_and_recovers(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, redis_url: str, with_redis: bool
) -> None:
    ann = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "a")
    bob = accounts.issue_token(db, accounts.ensure_user(db, "bob"), "b")
    db.commit()
    kw: dict[str, Any] = {"rate_limit_rps": 1, "rate_limit_burst": 3}
    if with_redis:
        kw["redis_url"] = redis_url
    with TestClient(app_for(pg_url, mock, **kw)) as c:
        codes = [c.get("/v1/models", headers=bearer(ann)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[-1] == 429
        r = c.get("/v1/models", headers=bearer(ann))
        assert r.json()["error"]["type"] == "rate_limit_error"
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 2
        assert c.get("/v1/models", headers=bearer(bob)).status_code == 200  # per token
        time.sleep(wait)
        assert c.get("/v1/models", headers=bearer(ann)).status_code == 200


def test_concurrent_streams_are_limited_per_token(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, redis_url: str
) -> None:
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "a")
    db.commit()
    mock.delay_s = 0.3
    app = app_for(pg_url, mock, max_streams_per_token=1, redis_url=redis_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {**PLAIN, "stream": True}
        with httpx.Client(timeout=30, headers=bearer(token)) as http:
            with http.stream("POST", url, json=body) as first:
                assert first.status_code == 200
                second = http.post(url, json=body)
                assert second.status_code == 429
                assert second.json()["error"]["code"] == "too_many_streams"
                assert second.headers["Retry-After"] == "1"
                first.read()
            assert http.post(url, json=body).status_code == 200  # the slot came back
    finally:
        server.should_exit = True
        thread.join(10)


def test_request_log_keeps_token_ids_not_tokens_and_text_only_when_asked(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "a")
    db.commit()
    db.execute("TRUNCATE request_log")
    db.commit()
    for keep_text in (False, True):
        with TestClient(app_for(pg_url, mock, log_chat_text=keep_text)) as c:
            assert (
                c.post("/v1/chat/completions", json=PLAIN, headers=bearer(token)).status_code == 200
            )
            assert c.get("/v1/models").status_code == 401
    rows = db.execute(
        "SELECT token_id, user_id, route, model, status, prompt_tokens, prompt, answer"
        " FROM request_log ORDER BY id"
    ).fetchall()
    assert [(r[2], r[4]) for r in rows] == [
        ("/v1/chat/completions", 200),
        ("/v1/models", 401),
    ] * 2
    token_id = db.execute("SELECT id FROM tokens").fetchone()
    assert rows[0][0] == token_id[0] and rows[0][3] == "mock" and rows[0][5] == 10  # type: ignore[index]
    assert rows[0][6] is None and rows[0][7] is None  # private by default
    assert rows[2][6] == "hi" and rows[2][7]
    assert token not in str(rows)


def test_cors_is_off_unless_origins_are_configured(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    preflight = {
        "Origin": "https://chat.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with TestClient(app_for(pg_url, mock)) as c:
        r = c.options("/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with TestClient(app_for(pg_url, mock, cors_origins="https://chat.example")) as c:
        r = c.options("/v1/chat/completions", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://chat.example"
        other = c.options("/v1/chat/completions", headers={**preflight, "Origin": "https://x.y"})
        assert "access-control-allow-origin" not in other.headers


def test_x_forwarded_user_is_believed_only_from_a_trusted_proxy(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    sso = {"X-Forwarded-User": "carol"}
    with TestClient(app_for(pg_url, mock)) as c:  # off by default
        assert c.get("/v1/models", headers=sso).status_code == 401
    with TestClient(app_for(pg_url, mock, trusted_proxies="10.9.9.9")) as c:
        assert c.get("/v1/models", headers=sso).status_code == 401  # testclient is not it
    with TestClient(app_for(pg_url, mock, trusted_proxies="testclient")) as c:
        assert c.get("/v1/models", headers=sso).status_code == 200
        row = db.execute("SELECT role FROM users WHERE name = 'carol'").fetchone()
        assert row == ("user",)
        accounts.set_disabled(db, "carol", True)
        db.commit()
        assert c.get("/v1/models", headers=sso).status_code == 401
