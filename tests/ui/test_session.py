"""The UI's browser session on the real app and a real PostgreSQL: signing in exchanges a token for
a strict httpOnly cookie (only its hash is stored), the cookie authenticates the API like a bearer
token, changes need the UI's header, and signing out ends the session for good."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from tests.conftest import free_port
from tests.factories import HashEmbedder
from workers.celery_app import INTERACTIVE_QUEUE, TASK_INGEST

UI = {"X-Hearth-UI": "1"}


@dataclass
class Setup:
    app: FastAPI
    client: TestClient
    token: str
    user: accounts.User
    db: psycopg.Connection
    pg_url: str


def seed_conversation(db: psycopg.Connection, user_id: int) -> str:
    cid = str(uuid.uuid4())
    db.execute(
        "INSERT INTO conversations (id, user_id, title) VALUES (%s, %s, 'Where is the key?')",
        (cid, user_id),
    )
    db.execute(
        "INSERT INTO messages (conversation_id, role, content) VALUES"
        " (%s, 'user', 'Where is the key?'), (%s, 'assistant', 'Under the mat.')",
        (cid, cid),
    )
    db.commit()
    return cid


@pytest.fixture
def setup(db: psycopg.Connection, pg_url: str) -> Iterator[Setup]:
    user = accounts.ensure_user(db, "ann", "admin")
    token = accounts.issue_token(db, user, "test")
    db.commit()
    # a closed port: no LLM backend is listening
    settings = get_settings(database_url=pg_url, llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    app = create_app(settings, embedder=HashEmbedder())
    with TestClient(app) as client:
        yield Setup(app, client, token, user, db, pg_url)


def sign_in(client: TestClient, token: str) -> Any:
    r = client.post("/ui/session", json={"token": token}, headers=UI)
    assert r.status_code == 200, r.text
    return r


def session_rows(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    db.commit()
    return db.execute("SELECT * FROM ui_sessions").fetchall()


def test_the_page_and_its_assets_are_served_with_a_strict_policy(setup: Setup) -> None:
    c = setup.client
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert "/ui/static/app.js" in page.text and "/ui/static/vendor/purify.min.js" in page.text
    assert "/ui/static/signin.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    assert c.head("/").status_code == 200
    for path, kind in (
        ("/ui/static/app.js", "text/javascript"),
        ("/ui/static/signin.js", "text/javascript"),
        ("/ui/static/app.css", "text/css"),
        ("/ui/static/vendor/marked.umd.js", "text/javascript"),
        ("/ui/static/vendor/purify.min.js", "text/javascript"),
    ):
        r = c.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "DOMPurify" in c.get("/ui/static/vendor/purify.min.js").text  # licence header kept
    for bad in ("/ui/static/missing.js", "/ui/static/../routes/ui.py", "/ui/static/%2e%2e/auth.py"):
        r = c.get(bad)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", bad


def test_a_bad_token_is_refused_with_an_openai_shaped_401(setup: Setup) -> None:
    for token in ("hearth_wrong", "", "   "):
        r = setup.client.post("/ui/session", json={"token": token}, headers=UI)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert "set-cookie" not in r.headers
    assert session_rows(setup.db) == []


def test_signing_in_needs_the_ui_header(setup: Setup) -> None:
    r = setup.client.post("/ui/session", json={"token": setup.token})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_header_missing"
    assert "set-cookie" not in r.headers


def test_sign_in_sets_a_strict_httponly_cookie_that_authenticates(setup: Setup) -> None:
    r = sign_in(setup.client, setup.token)
    assert r.json()["user"] == {"id": setup.user.id, "name": "ann", "role": "admin"}
    cookie = r.headers["set-cookie"]
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert attrs[0].startswith("hearth_session=") and len(attrs[0]) > 40
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert "secure" not in attrs  # plain http here
    assert any(a.startswith("max-age=") and int(a.split("=")[1]) > 86400 for a in attrs)
    assert setup.token not in cookie
    me = setup.client.get("/ui/me")  # the cookie alone, no Authorization header
    assert me.status_code == 200 and me.json()["name"] == "ann"
    assert setup.client.get("/v1/conversations").status_code == 200


def test_the_cookie_is_secure_over_https(setup: Setup) -> None:
    with TestClient(setup.app, base_url="https://testserver") as c:
        r = sign_in(c, setup.token)
        assert "secure" in [a.strip().lower() for a in r.headers["set-cookie"].split(";")]
        assert c.get("/ui/me").status_code == 200


def test_only_a_hash_of_the_session_is_stored(setup: Setup) -> None:
    sign_in(setup.client, setup.token)
    session_id = setup.client.cookies["hearth_session"]
    rows = session_rows(setup.db)
    assert len(rows) == 1
    row = setup.db.execute(
        "SELECT session_hash, user_id, created_at, expires_at, last_seen_at FROM ui_sessions"
    ).fetchone()
    assert row is not None
    assert row[0] == hashlib.sha256(session_id.encode()).hexdigest() and row[1] == setup.user.id
    assert row[2] < row[3] and row[4] is not None
    stored = repr(rows)
    assert session_id not in stored and setup.token not in stored


def test_cookie_requests_that_change_anything_need_the_ui_header(setup: Setup) -> None:
    cid = seed_conversation(setup.db, setup.user.id)
    c = setup.client
    sign_in(c, setup.token)
    url = f"/v1/conversations/{cid}"
    for method, kwargs in (
        ("patch", {"json": {"title": "Keys"}}),
        ("delete", {}),
        ("post", {"json": {"model": "hearth", "messages": [{"role": "user", "content": "x"}]}}),
    ):
        target = "/v1/chat/completions" if method == "post" else url
        r = getattr(c, method)(target, **kwargs)
        assert r.status_code == 403, (method, r.text)
        assert r.json()["error"]["code"] == "csrf_header_missing"
    assert c.get(url).json()["title"] == "Where is the key?"  # reads need no header
    r = c.patch(url, json={"title": "Keys"}, headers=UI)
    assert r.status_code == 200 and r.json()["title"] == "Keys"
    # bearer requests are unaffected: no header needed, the cookie is not consulted
    c.cookies.clear()
    bearer = {"Authorization": f"Bearer {setup.token}"}
    assert c.patch(url, json={"title": "Bearer"}, headers=bearer).status_code == 200


def test_sign_out_clears_the_cookie_and_ends_the_session(setup: Setup) -> None:
    c = setup.client
    sign_in(c, setup.token)
    old = c.cookies["hearth_session"]
    assert c.delete("/ui/session").status_code == 403  # the header is needed here too
    r = c.delete("/ui/session", headers=UI)
    assert r.status_code == 200 and r.json() == {"signed_out": True}
    attrs = [a.strip().lower() for a in r.headers["set-cookie"].split(";")]
    assert attrs[0] in ('hearth_session=""', "hearth_session=") and "max-age=0" in attrs
    assert "hearth_session" not in c.cookies
    assert session_rows(setup.db) == []
    refused = c.get("/ui/me")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"].startswith("Missing bearer token")
    c.cookies.set("hearth_session", old)  # the old value is worthless now
    again = c.get("/v1/conversations")
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_session"
    assert again.json()["error"]["type"] == "authentication_error"


def test_a_session_ends_with_its_token_and_at_its_expiry(setup: Setup) -> None:
    c = setup.client
    sign_in(c, setup.token)
    assert c.get("/ui/me").status_code == 200
    setup.db.execute("UPDATE ui_sessions SET expires_at = now() - interval '1 second'")
    setup.db.commit()
    assert c.get("/ui/me").status_code == 401
    sign_in(c, setup.token)
    assert c.get("/ui/me").status_code == 200
    (info,) = accounts.list_tokens(setup.db)
    assert accounts.revoke_token(setup.db, info.id)
    setup.db.commit()
    assert c.get("/ui/me").status_code == 401
    r = c.post("/ui/session", json={"token": setup.token}, headers=UI)
    assert r.status_code == 401


def test_bearer_errors_are_unchanged(setup: Setup) -> None:
    c = setup.client
    sign_in(c, setup.token)
    r = c.get("/v1/conversations", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    malformed = "Malformed Authorization header: expected 'Bearer <token>'."
    assert r.json()["error"]["message"] == malformed
    # a wrong bearer token is refused even beside a valid session cookie
    r = c.get("/v1/conversations", headers={"Authorization": "Bearer hearth_wrong"})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "Invalid, expired or revoked token."
    assert r.headers["www-authenticate"] == "Bearer"


class RecordingQueue:
    """Stands in for the Celery app at the edge: records the tasks the API sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any], str]] = []
        self.headers: list[dict[str, Any]] = []

    def send_task(self, name: str, args: list[Any], queue: str, headers: dict[str, Any]) -> None:
        self.sent.append((name, args, queue))
        self.headers.append(headers)

    def close(self) -> None:
        pass


def test_documents_list_and_reindex(setup: Setup) -> None:
    db = setup.db
    db.execute("INSERT INTO collections (name) VALUES ('house')")
    doc_id = db.execute(
        "INSERT INTO documents (path, source, collection, status, content_hash, chunk_count,"
        " indexed_at) VALUES ('/w/a.md', 'watch', 'house', 'indexed', 'abc', 3, now())"
        " RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    db.commit()
    c = setup.client
    sign_in(c, setup.token)
    (doc,) = c.get("/ui/documents").json()["data"]
    assert doc["file_id"] == f"file-{doc_id}" and doc["filename"] == "a.md"
    assert doc["status"] == "indexed" and doc["chunk_count"] == 3 and doc["indexed_at"] > 0

    url = f"/ui/documents/{doc_id}/reindex"
    r = c.post(url, headers=UI)
    assert r.status_code == 503  # no ingestion queue configured
    queue = RecordingQueue()
    setup.app.state.hearth.celery = queue
    assert c.post(url).status_code == 403  # cookie without the UI header
    r = c.post(url, headers={**UI, "X-Request-ID": "reindex-42"})
    assert r.status_code == 200 and r.json()["status"] == "queued"
    # with the document's generation: a delete before the task runs makes it do nothing
    (generation,) = db.execute("SELECT generation FROM documents").fetchone()  # type: ignore[misc]
    db.commit()
    assert queue.sent == [
        (TASK_INGEST, ["/w/a.md", "house", "watch", generation], INTERACTIVE_QUEUE)
    ]
    assert queue.headers == [{"request_id": "reindex-42"}]  # the worker logs the same id
    db.commit()
    assert db.execute("SELECT status, content_hash FROM documents").fetchone() == ("queued", None)
    busy = c.post(url, headers=UI)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "busy"
    assert c.post("/ui/documents/987654/reindex", headers=UI).status_code == 404

    # another user who may not read the collection sees nothing and re-indexes nothing
    bob = accounts.ensure_user(db, "bob")
    bob_token = accounts.issue_token(db, bob, "test")
    db.execute("UPDATE documents SET status = 'indexed'")
    db.commit()
    other = TestClient(setup.app)  # the app is running already (no second lifespan)
    sign_in(other, bob_token)
    assert other.get("/ui/documents").json()["data"] == []
    assert other.post(url, headers=UI).status_code == 404
    assert len(queue.sent) == 1
    setup.app.state.hearth.celery = None
