"""The API's cache of live tokens (api.store.tokencache): a token's user is remembered for at
most TOKEN_CACHE_S, never past the token's expiry; a revocation or a disabled user ends it at
once in the process that made the change, in every other API process as soon as PostgreSQL tells
them (LISTEN/NOTIFY), and at the latest when the entry's time is up. The tests play the attacker
who keeps using a token after it was taken away."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from api.store.accounts import User
from core.settings import get_settings
from core.tokens import hash_token
from tests.conftest import run_hearth, serve_app
from tests.factories import HashEmbedder, until
from tests.mock_llm import MockLLM

EMB = HashEmbedder()
PLAIN = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}


def app_for(pg_url: str, mock: MockLLM, **kw: Any) -> Any:
    s = get_settings(database_url=pg_url, llm_base_url=mock.url, llm_model="mock", **kw)
    return create_app(s, embedder=EMB)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def status(client: Any, token: str) -> int:
    return int(client.get("/v1/models", headers=bearer(token)).status_code)


# --- the cache itself (a fake clock) ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ANN = User(1, "ann", "user", 7)


def test_an_entry_lives_for_the_ttl_and_no_longer() -> None:
    from api.store.tokencache import TokenCache

    clock = Clock()
    cache = TokenCache(5.0, clock=clock)
    cache.put("d1", ANN, None)
    assert cache.get("d1") == ANN
    clock.now += 4.9
    assert cache.get("d1") == ANN
    clock.now += 0.2
    assert cache.get("d1") is None
    assert cache.get("unknown") is None


def test_an_entry_never_outlives_its_tokens_expiry() -> None:
    from api.store.tokencache import TokenCache

    clock = Clock()
    cache = TokenCache(60.0, clock=clock)
    cache.put("d1", ANN, datetime.now(UTC) + timedelta(seconds=2))
    assert cache.get("d1") == ANN
    clock.now += 2.5  # the token has expired; the cache's own 60 s are not up
    assert cache.get("d1") is None
    cache.put("d2", ANN, datetime.now(UTC) - timedelta(seconds=1))  # already expired
    assert cache.get("d2") is None


def test_a_ttl_of_zero_caches_nothing() -> None:
    from api.store.tokencache import TokenCache

    cache = TokenCache(0.0)
    cache.put("d1", ANN, None)
    assert cache.get("d1") is None


def test_invalidation_empties_every_cache_of_the_process() -> None:
    from api.store.tokencache import TokenCache, invalidate_all

    one, two = TokenCache(5.0), TokenCache(5.0)
    one.put("d1", ANN, None)
    two.put("d2", ANN, None)
    invalidate_all()
    assert one.get("d1") is None and two.get("d2") is None
    one.put("d1", ANN, None)
    assert one.get("d1") == ANN


def test_a_lookup_overtaken_by_an_invalidation_is_not_remembered() -> None:
    """A lookup that read the token just before its revocation was committed must not put it
    back for a whole TTL."""
    from api.store.tokencache import TokenCache, invalidate_all

    cache = TokenCache(5.0)
    began = cache.generation
    invalidate_all()  # the revocation, while the lookup was at the database
    cache.put("d1", ANN, None, began)
    assert cache.get("d1") is None
    cache.put("d1", ANN, None, cache.generation)
    assert cache.get("d1") == ANN


def test_the_cache_is_bounded() -> None:
    from api.store.tokencache import TokenCache

    cache = TokenCache(60.0, max_entries=100)
    for i in range(1000):
        cache.put(f"d{i}", ANN, None)
    assert len(cache) <= 100
    assert cache.get("d999") == ANN  # the newest is kept


# --- against the real app and PostgreSQL ------------------------------------------------------


def test_a_revocation_by_another_process_is_honoured_within_the_ttl(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    """Revoked behind the API's back (plain SQL: no notification, no hook in this process),
    the token is refused once TOKEN_CACHE_S has passed, at the latest."""
    ttl = 1.0
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "phone")
    db.commit()
    with TestClient(app_for(pg_url, mock, token_cache_s=ttl)) as c:
        assert status(c, token) == 200  # cached from here on
        db.execute("UPDATE tokens SET revoked_at = now()")
        db.commit()
        revoked = time.monotonic()
        until(lambda: time.monotonic() - revoked > ttl, ttl + 5, "the TTL to pass")
        assert status(c, token) == 401
        assert status(c, token) == 401


def test_an_expired_token_is_refused_although_cached(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    with TestClient(app_for(pg_url, mock, token_cache_s=300)) as c:
        expires = datetime.now(UTC) + timedelta(seconds=3)  # issued once the app is up
        token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "t", expires)
        db.commit()
        assert status(c, token) == 200
        until(lambda: datetime.now(UTC) > expires, 10, "the token to expire")
        assert status(c, token) == 401


@pytest.mark.parametrize("how", ["revoke", "disable", "admin-revoke", "admin-disable"])
def test_a_change_made_in_this_process_is_refused_on_the_very_next_request(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, how: str
) -> None:
    ann = accounts.ensure_user(db, "ann")
    token = accounts.issue_token(db, ann, "phone")
    admin = accounts.issue_token(db, accounts.ensure_user(db, "root", "admin"), "admin")
    db.commit()
    token_id = db.execute("SELECT id FROM tokens WHERE description = 'phone'").fetchone()
    assert token_id is not None
    with TestClient(app_for(pg_url, mock, token_cache_s=300)) as c:
        assert status(c, token) == 200
        assert status(c, token) == 200  # from the cache
        if how == "revoke":
            assert accounts.revoke_token(db, token_id[0])
            db.commit()
        elif how == "disable":
            assert accounts.set_disabled(db, "ann", True)
            db.commit()
        elif how == "admin-revoke":
            r = c.delete(f"/v1/admin/tokens/{token_id[0]}", headers=bearer(admin))
            assert r.status_code == 200
        else:
            r = c.patch("/v1/admin/users/ann", json={"disabled": True}, headers=bearer(admin))
            assert r.status_code == 200
        assert status(c, token) == 401
        assert c.get("/v1/models", headers=bearer(admin)).status_code == 200


def test_a_revocation_by_the_cli_reaches_a_running_api_long_before_the_ttl(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, env_without_hearth: dict[str, str]
) -> None:
    """`hearth token revoke` in its own process: the API hears of it from PostgreSQL (its cache
    TTL here is five minutes, so only the notification can end the token this soon)."""
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "phone")
    db.commit()
    token_id = db.execute("SELECT id FROM tokens").fetchone()
    assert token_id is not None
    app = app_for(pg_url, mock, token_cache_s=300)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        assert status(c, token) == 200
        assert status(c, token) == 200
        done = run_hearth(
            {**env_without_hearth, "DATABASE_URL": pg_url}, "token", "revoke", str(token_id[0])
        )
        assert done.returncode == 0, done.stderr
        until(lambda: status(c, token) == 401, 30, "the revoked token to be refused")
        assert status(c, token) == 401


def test_the_cache_holds_digests_never_tokens(
    db: psycopg.Connection, pg_url: str, mock: MockLLM
) -> None:
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "phone")
    db.commit()
    with TestClient(app_for(pg_url, mock, token_cache_s=300)) as c:
        assert status(c, token) == 200
        cache = c.app.state.hearth.tokens  # type: ignore[attr-defined]
        assert hash_token(token) in cache.digests()
        assert token not in repr(vars(cache)) and all(token not in k for k in cache.digests())


def test_last_use_is_still_recorded(db: psycopg.Connection, pg_url: str, mock: MockLLM) -> None:
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "phone")
    db.commit()
    with TestClient(app_for(pg_url, mock, token_cache_s=300)) as c:
        assert status(c, token) == 200
    row = db.execute("SELECT last_used_at FROM tokens").fetchone()
    assert row is not None and row[0] is not None
