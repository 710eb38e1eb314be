"""The HTTP edge tried as an attacker would (issue 13, items 7, 9, 10 and 11), on the real app, a
real PostgreSQL, the packaged embedder and a scripted backend named like the local model:

- one huge chat message must not stall everyone else's requests, and one that cannot fit the
  model's window is refused before a single token is counted;
- NUL characters and lone surrogates anywhere a string reaches PostgreSQL or a tokenizer are a
  400 naming the parameter (never a 500, never an answer generated and then lost), and what the
  backend says is stored safely whatever bytes it contains;
- a multipart upload cut off before its closing boundary stores nothing;
- the API's schema and docs are not served to strangers, and no page pulls code from a CDN.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.rewrite import REWRITE_INSTRUCTIONS
from api.store import accounts
from api.tokenizer import TokenCounter
from core.embedded import EmbeddedRedis
from core.embedder import Embedder
from core.settings import get_settings
from retrieval import index
from tests.factories import make_document
from tests.mock_llm import MockLLM, serve

BACKEND = "smollm2"  # the local model's id: plain chat that is generated, then stored
DEADLINE_S = 30.0  # a failure's timeout, never a duration under test
BOILER = "The boiler error code E-4471 means the pressure sensor failed."


@pytest.fixture
def mock() -> Iterator[MockLLM]:
    with serve(MockLLM(model=BACKEND)) as m:
        yield m


@pytest.fixture
def tokens(db: psycopg.Connection, embedder: Embedder) -> dict[str, str]:
    """ann (an admin, who reads every collection) and bob (a user); one indexed document."""
    doc = make_document("/w/boiler.md", [BOILER], title="boiler.md")
    doc.collection = "house"
    index.replace_chunks(db, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    out = {
        "ann": accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test"),
        "bob": accounts.issue_token(db, accounts.ensure_user(db, "bob"), "test"),
    }
    db.commit()
    return out


def app_client(
    pg_url: str, embedder: Embedder, mock: MockLLM, token: str | None = None, **settings: Any
) -> TestClient:
    base: dict[str, Any] = {
        "database_url": pg_url,
        "llm_base_url": mock.url,
        "llm_model": BACKEND,
        "relevance_threshold": 0,
        "rate_limit_rps": 0,
    }
    s = get_settings(**{**base, **settings})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(create_app(s, embedder=embedder), headers=headers)


def ask(content: Any, model: str = "hearth", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def assert_error(r: Any, status: int, param: str | None = None, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.text
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error


def stored_conversations(db: psycopg.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])  # type: ignore[index]


# --- 7. one huge message must not cost everyone ------------------------------------------------


class CountSpy:
    """Wraps TokenCounter.count: records the length of every long text counted, and can hold
    the first such count until the test releases it (from whatever thread it runs on)."""

    LONG = 100_000

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold: bool = False) -> None:
        self.long_counts: list[int] = []
        self.counting = threading.Event()
        self.release = threading.Event()
        self.released_by_test: list[bool] = []
        original = TokenCounter.count
        spy = self

        def count(self: TokenCounter, text: str) -> int:
            if len(text) >= spy.LONG:
                spy.long_counts.append(len(text))
                spy.counting.set()
                if hold:
                    spy.released_by_test.append(spy.release.wait(DEADLINE_S))
            return original(self, text)

        monkeypatch.setattr(TokenCounter, "count", count)


@pytest.mark.parametrize("model", ["hearth", BACKEND])
def test_a_message_that_cannot_fit_the_window_is_refused_before_counting(
    pg_url: str,
    embedder: Embedder,
    mock: MockLLM,
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    model: str,
) -> None:
    spy = CountSpy(monkeypatch)
    huge = "boiler pressure " * (10 * 2**20 // 16)  # 10 MB, far beyond a 2048-token window
    with app_client(pg_url, embedder, mock, tokens["bob"]) as c:
        r = c.post("/v1/chat/completions", json=ask(huge, model))
        assert_error(r, 400, "messages", "context_length_exceeded")
        # a long history is not counted either: only what could still fit is
        history = [{"role": "user", "content": huge}, {"role": "assistant", "content": "ok"}]
        body = {"model": model, "messages": [*history, {"role": "user", "content": "E-4471?"}]}
        assert c.post("/v1/chat/completions", json=body).status_code == 200
    assert spy.long_counts == [], "the huge text was tokenised"
    assert not mock.requests or all(len(json.dumps(q)) < 2**20 for q in mock.requests)


def test_health_answers_while_a_long_message_is_being_counted(
    pg_url: str,
    embedder: Embedder,
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message that fits a (huge) window is counted, and counting it must not hold the event
    loop: /health, asked while the count is held, answers before it is released."""
    spy = CountSpy(monkeypatch, hold=True)
    big = "boiler pressure " * (2 * 2**20 // 16)  # 2 MB
    window = 50_000_000
    with (
        serve(MockLLM(model=BACKEND, max_model_len=window)) as backend,
        app_client(pg_url, embedder, backend, tokens["bob"], llm_max_model_len=window) as c,
    ):
        outcome: dict[str, Any] = {}

        def post() -> None:
            outcome["status"] = c.post("/v1/chat/completions", json=ask(big, BACKEND))

        poster = threading.Thread(target=post)
        poster.start()
        try:
            assert spy.counting.wait(DEADLINE_S), "the long message was never counted"
            health = c.get("/health")  # from this thread, while the count is held
            assert health.status_code == 200
        finally:
            spy.release.set()
            poster.join(DEADLINE_S * 2)
        assert not poster.is_alive()
        assert spy.released_by_test[0], "/health waited for the count: the loop was blocked"
        assert outcome["status"].status_code == 200, outcome["status"].text


# --- 9. NUL characters, lone surrogates, wrong types: a 400 naming the parameter ------------


def raw(payload: str) -> dict[str, Any]:
    """A request body sent byte for byte (httpx cannot encode a lone surrogate itself)."""
    return {"content": payload.encode(), "headers": {"Content-Type": "application/json"}}


NUL = "\\u0000"  # as written in JSON
SURROGATE = "\\ud800"
BAD_BODIES = [
    pytest.param(
        "/v1/chat/completions",
        f'{{"model":"hearth","messages":[{{"role":"user","content":"boiler{NUL}code"}}]}}',
        "messages.0.content",
        id="chat-nul",
    ),
    pytest.param(
        "/v1/chat/completions",
        f'{{"model":"{BACKEND}","messages":[{{"role":"user","content":"hello{NUL}"}}]}}',
        "messages.0.content",
        id="plain-chat-nul",
    ),
    pytest.param(
        "/v1/chat/completions",
        f'{{"model":"hearth","messages":[{{"role":"user","content":"boiler {SURROGATE}"}}]}}',
        "messages.0.content",
        id="chat-surrogate",
    ),
    pytest.param(
        "/v1/chat/completions",
        '{"model":"hearth","messages":[{"role":"user","content":'
        '[{"type":"text","text":"x\\udc00y"}]}]}',
        "messages.0.content.0.text",
        id="chat-part-low-surrogate",
    ),
    pytest.param(
        "/v1/chat/completions",
        '{"model":"hearth","messages":[{"role":"user","content":"hi"}],'
        f'"metadata":{{"tag{NUL}":"x"}}}}',
        "metadata",
        id="chat-metadata-key-nul",
    ),
    pytest.param(
        "/v1/search",
        f'{{"query":"boiler{NUL}","mode":"lexical"}}',
        "query",
        id="lexical-query-nul",
    ),
    pytest.param(
        "/v1/search",
        f'{{"query":"boiler","filters":{{"path_prefix":"/w{NUL}"}}}}',
        "filters.path_prefix",
        id="path-prefix-nul",
    ),
    pytest.param(
        "/v1/search",
        f'{{"query":"boiler","filters":{{"metadata":{{"a{NUL}b":"x"}}}}}}',
        "filters.metadata",
        id="metadata-key-nul",
    ),
    pytest.param(
        "/v1/search",
        f'{{"query":"boiler {SURROGATE}","mode":"dense"}}',
        "query",
        id="dense-query-surrogate",
    ),
    pytest.param(
        "/v1/embeddings",
        f'{{"model":"hearth","input":["fine","bad {SURROGATE}"]}}',
        "input.1",
        id="embeddings-surrogate",
    ),
    pytest.param(
        "/ui/session",
        f'{{"token":"{SURROGATE}"}}',
        "token",
        id="sign-in-surrogate",
    ),
]


@pytest.mark.parametrize(("path", "payload", "param"), BAD_BODIES)
def test_nul_and_lone_surrogates_in_a_body_are_a_400(
    pg_url: str,
    embedder: Embedder,
    mock: MockLLM,
    tokens: dict[str, str],
    db: psycopg.Connection,
    path: str,
    payload: str,
    param: str,
) -> None:
    with app_client(pg_url, embedder, mock, tokens["ann"]) as c:
        extra = {"X-Hearth-UI": "1"} if path.startswith("/ui/") else {}
        req = raw(payload)
        r = c.post(path, content=req["content"], headers={**req["headers"], **extra})
    assert_error(r, 400, param)
    assert mock.requests == [], "the backend was asked anyway"
    assert stored_conversations(db) == 0


def test_a_nul_in_a_conversation_title_is_a_400(
    pg_url: str, embedder: Embedder, mock: MockLLM, tokens: dict[str, str]
) -> None:
    with app_client(pg_url, embedder, mock, tokens["bob"]) as c:
        cid = c.post("/v1/chat/completions", json=ask("hello", BACKEND)).json()["conversation_id"]
        for target in (cid, str(uuid.uuid4())):
            r = c.patch(f"/v1/conversations/{target}", **raw(f'{{"title":"a{NUL}b"}}'))
            assert_error(r, 400, "title")
        assert c.get(f"/v1/conversations/{cid}").json()["title"] == "hello"


@pytest.mark.parametrize(
    ("method", "url", "param"),
    [
        ("GET", "/v1/files?collection=%00", "collection"),
        ("GET", "/v1/files?status=indexed&after=%00", "after"),
        ("DELETE", "/v1/conversations/%00", "conversation_id"),
        ("PATCH", "/v1/admin/users/a%00b", "name"),
        ("DELETE", "/v1/admin/collections/x%00/grants?user=bob", "name"),
        ("GET", "/v1/models/hearth:%00", "model_id"),
        ("GET", "/ui/static/app%00.js", "name"),
    ],
)
def test_nul_in_the_url_is_a_400(
    pg_url: str,
    embedder: Embedder,
    mock: MockLLM,
    tokens: dict[str, str],
    method: str,
    url: str,
    param: str,
) -> None:
    with app_client(pg_url, embedder, mock, tokens["ann"]) as c:
        body = {"json": {"disabled": True}} if method == "PATCH" else {}
        r = c.request(method, url, **body)
    assert_error(r, 400, param)


def test_nul_in_a_trusted_proxy_user_header_is_a_400(
    pg_url: str, embedder: Embedder, mock: MockLLM, db: psycopg.Connection
) -> None:
    with app_client(pg_url, embedder, mock, trusted_proxies="testclient") as c:
        r = c.get("/v1/models", headers={"X-Forwarded-User": "eve\x00admin"})
    assert_error(r, 400, "x-forwarded-user")
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0  # type: ignore[index]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_number_jsonb_cannot_hold_in_a_metadata_filter_is_refused(
    pg_url: str, embedder: Embedder, mock: MockLLM, tokens: dict[str, str], number: str
) -> None:
    """Python's JSON reader takes these (1e400 overflows to infinity); PostgreSQL's jsonb, where
    the filter goes, takes none of them."""
    payload = f'{{"query":"boiler","filters":{{"metadata":{{"a":[1,{{"b":{number}}}]}}}}}}'
    with app_client(pg_url, embedder, mock, tokens["ann"]) as c:
        r = c.post("/v1/search", **raw(payload))
    assert_error(r, 422, "filters.metadata")


@pytest.mark.parametrize("conversation_id", [42, {"id": "x"}, ["x"], True])
def test_a_conversation_id_that_is_not_a_string_is_a_400(
    pg_url: str,
    embedder: Embedder,
    mock: MockLLM,
    tokens: dict[str, str],
    db: psycopg.Connection,
    conversation_id: Any,
) -> None:
    with app_client(pg_url, embedder, mock, tokens["bob"]) as c:
        body = ask("hello", BACKEND, metadata={"conversation_id": conversation_id})
        r = c.post("/v1/chat/completions", json=body)
    assert_error(r, 400, "metadata.conversation_id")
    assert mock.requests == [] and stored_conversations(db) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_what_the_backend_says_is_stored_safely_whatever_its_bytes(
    pg_url: str,
    embedder: Embedder,
    mock: MockLLM,
    tokens: dict[str, str],
    stream: bool,
) -> None:
    """A model can emit a NUL byte (byte-level tokenizers have a token for it): the answer is
    still returned and kept, with the character replaced, never lost to a failed INSERT."""
    mock.reply = lambda messages: "Zero\x00byte answer."
    with app_client(pg_url, embedder, mock, tokens["bob"]) as c:
        r = c.post("/v1/chat/completions", json=ask("hello", BACKEND, stream=stream))
        assert r.status_code == 200, r.text
        cid = r.headers["X-Conversation-Id"]
        stored = c.get(f"/v1/conversations/{cid}")
        assert stored.status_code == 200, stored.text
        answer = stored.json()["messages"][1]["content"]
    assert "\x00" not in answer and answer.startswith("Zero") and "byte answer" in answer


def test_a_rewritten_query_with_a_nul_still_searches(
    pg_url: str,
    embedder: Embedder,
    mock: MockLLM,
    tokens: dict[str, str],
) -> None:
    """The follow-up's search query comes from the model: its bytes are not to be trusted."""

    def reply(messages: list[dict[str, Any]]) -> str:
        if messages[0]["content"] == REWRITE_INSTRUCTIONS:
            return "boiler\x00 error code"
        return "It means the pressure sensor failed."

    mock.reply = reply
    body = {
        "model": "hearth",
        "messages": [
            {"role": "user", "content": "What does the boiler say?"},
            {"role": "assistant", "content": "It shows an error code."},
            {"role": "user", "content": "And what does that code mean?"},
        ],
    }
    with app_client(pg_url, embedder, mock, tokens["ann"]) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert "\x00" not in r.json()["search_query"]


# --- 10. a multipart upload cut short stores nothing ----------------------------------------

BOUNDARY = "hearthboundary"


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param("", id="no-closing-boundary"),
        pytest.param(f"\r\n--{BOUNDARY}", id="closing-boundary-without-dashes"),
        pytest.param(f"\r\n--{BOUNDARY}\r\n", id="a-new-part-that-never-comes"),
    ],
)
def test_an_upload_without_its_closing_boundary_stores_nothing(
    pg_url: str,
    embedder: Embedder,
    mock: MockLLM,
    tokens: dict[str, str],
    db: psycopg.Connection,
    broker: EmbeddedRedis,
    tmp_path: Path,
    ending: str,
) -> None:
    data = tmp_path / "hearth-data"
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
        "The first half of a private note, cut off in the middle of a"
        f"{ending}"
    ).encode()
    with app_client(
        pg_url, embedder, mock, tokens["bob"], redis_url=broker.url, hearth_data_dir=data
    ) as c:
        r = c.post(
            "/v1/files",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert_error(r, 400, "file")
        assert c.get("/v1/files").json()["data"] == []
    assert db.execute("SELECT count(*) FROM documents WHERE source = 'upload'").fetchone()[0] == 0  # type: ignore[index]
    left = [p for p in (data / "uploads").rglob("*") if p.is_file()]
    assert left == []


def test_a_nul_in_an_upload_form_field_is_a_400(
    pg_url: str,
    embedder: Embedder,
    mock: MockLLM,
    tokens: dict[str, str],
    db: psycopg.Connection,
    broker: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    data = tmp_path / "hearth-data"
    with app_client(
        pg_url, embedder, mock, tokens["bob"], redis_url=broker.url, hearth_data_dir=data
    ) as c:
        r = c.post(
            "/v1/files",
            files={"file": ("notes.txt", b"hello", "text/plain")},
            data={"purpose": "assistants\x00"},
        )
    assert_error(r, 400, "purpose")
    assert db.execute("SELECT count(*) FROM documents").fetchone()[0] == 1  # type: ignore[index]


# --- 11. what a stranger sees --------------------------------------------------------------


def test_no_docs_and_no_schema_for_strangers_by_default(
    pg_url: str, embedder: Embedder, mock: MockLLM, tokens: dict[str, str]
) -> None:
    with app_client(pg_url, embedder, mock) as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            r = c.get(path)
            assert r.status_code == 404, (path, r.text)
            assert "cdn" not in r.text.lower()
        authed = {"Authorization": f"Bearer {tokens['ann']}"}
        assert c.get("/openapi.json", headers=authed).status_code == 404
        assert c.get("/health").json() == {"status": "ok"}
        page = c.get("/")
        assert page.status_code == 200 and "cdn" not in page.text.lower()


def test_api_docs_on_serve_the_schema_to_signed_in_callers_only(
    pg_url: str, embedder: Embedder, mock: MockLLM, tokens: dict[str, str]
) -> None:
    with app_client(pg_url, embedder, mock, api_docs=True) as c:
        stranger = c.get("/openapi.json")
        assert_error(stranger, 401)
        schema = c.get("/openapi.json", headers={"Authorization": f"Bearer {tokens['bob']}"})
        assert schema.status_code == 200
        assert "/v1/chat/completions" in schema.json()["paths"]
        for path in ("/docs", "/redoc"):  # no page that would load Swagger UI from a CDN
            assert c.get(path).status_code == 404
