"""Schemathesis against the app's own OpenAPI document, served for real (uvicorn, PostgreSQL, a
scripted LLM backend): generated requests, valid and not, never get a 500, and every error is
OpenAI-shaped JSON. Without a token, every /v1 route answers 401 and nothing else."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from api.app import create_app
from api.store import accounts
from core.db import connect
from core.embedded import EmbeddedRedis
from core.settings import get_settings
from retrieval import index
from tests.conftest import free_port
from tests.factories import HashEmbedder, make_document
from tests.mock_llm import MockLLM, serve

# The server runs in a thread of this process, and the libraries under it (Celery, kombu, redis)
# draw from the global `random` while Hypothesis generates a case in the main thread; Hypothesis
# takes the changed global state for a strategy using `random` and warns, at random.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

EMB = HashEmbedder()
FUZZ = settings(
    max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("TRUNCATE documents, users RESTART IDENTITY CASCADE")
    with connect(pg_url) as db:
        doc = make_document("/w/boiler.md", ["The boiler error code E-4471 means low pressure."])
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
        token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "fuzz")
        db.commit()
    redis = EmbeddedRedis(tmp_path_factory.mktemp("redis"))  # uploads queue ingestion tasks
    data = tmp_path_factory.mktemp("data")
    with serve(MockLLM()) as mock:
        s = get_settings(
            database_url=pg_url,
            redis_url=redis.start(),
            hearth_data_dir=data,
            llm_base_url=mock.url,
            llm_model="mock",
            rate_limit_rps=0,  # or most generated requests would only meet the rate limit
            api_docs=True,  # the schema, for a signed-in caller (off by default)
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(s, embedder=EMB), port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}", token
        finally:
            server.should_exit = True
            thread.join(10)
            redis.stop()


def operations(base: str, token: str) -> list[Any]:
    loaded = schemathesis.openapi.from_url(
        base + "/openapi.json", headers={"Authorization": f"Bearer {token}"}
    )
    ops = [r.ok() for r in loaded.get_all_operations()]
    return [op for op in ops if op.path.startswith("/v1/")]


BOTH = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def fuzz(
    base: str,
    token: str,
    check: Callable[[Any], None],
    modes: tuple[GenerationMode, ...] = BOTH,
) -> int:
    """Run `check` on generated cases of every /v1 operation, valid ones and invalid ones."""
    ops = operations(base, token)
    for op in ops:
        for mode in modes:

            @FUZZ
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                check(case)

            try:
                run()
            except Unsatisfiable:
                # no parameter or body that a schema can rule out (none, or free strings)
                assert mode is GenerationMode.NEGATIVE
    return len(ops)


def assert_openai_error_body(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert {"type", "param", "code"} <= set(error)


def assert_openai_error(response: Any) -> None:
    assert response.headers["content-type"][0].startswith("application/json"), response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert {"type", "param", "code"} <= set(error)


def reinstate(pg_url: str) -> None:
    """Undo what a generated admin call may have done to the fuzzing admin (revoke its token,
    disable or demote it), so that every later case is still tried past authentication."""
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE users SET disabled = false, role = 'admin' WHERE name = 'ann'")
        db.execute("UPDATE tokens SET revoked_at = NULL, expires_at = NULL")


@pytest.mark.slow
def test_no_request_gets_a_server_error(server: tuple[str, str], pg_url: str) -> None:
    base, token = server

    def check(case: Any) -> None:
        response = case.call(base_url=base, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code < 500, (case.method, case.path, response.text)
        assert response.status_code != 401, (case.method, case.path, response.text)
        if response.status_code >= 400:
            assert_openai_error(response)
        if case.path.startswith("/v1/admin/"):
            reinstate(pg_url)

    assert fuzz(base, token, check) >= 10  # chat, models, files, search, embeddings, conversations…


@pytest.mark.slow  # every route, thousands of requests (~16 s)
def test_without_a_token_every_route_is_401(server: tuple[str, str]) -> None:
    base, token = server  # the token only fetches the schema

    def check(case: Any) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = headers
        response = case.call(base_url=base)
        assert response.status_code == 401, (case.method, case.path, response.text)
        assert_openai_error(response)

    fuzz(base, token, check)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ui/me"),
        ("GET", "/ui/documents"),
        ("POST", "/ui/documents/1/reindex"),
        ("GET", "/metrics"),
    ],
)
def test_the_ui_and_metrics_routes_without_a_token_are_401(
    server: tuple[str, str], method: str, path: str
) -> None:
    """The routes outside /v1 and outside the OpenAPI document, tried by hand."""
    base, _ = server
    for headers in ({}, {"Cookie": "hearth_session=forged"}, {"X-Hearth-UI": "1"}):
        response = httpx.request(method, base + path, headers=headers)
        assert response.status_code == 401, (method, path, headers, response.text)
        assert_openai_error_body(response)
