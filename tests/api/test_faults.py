"""Faults with real processes: the API's own PostgreSQL is stopped and started again under it.
During the outage every request is a 503 in OpenAI's shape (never a 500, never a hang); after it,
the pool replaces its dead connections and answers again without a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.store import accounts
from core.db import connect
from core.embedded import EmbeddedPostgres
from core.migrate import migrate
from core.settings import get_settings
from tests.conftest import free_port
from tests.factories import HashEmbedder
from tests.mock_llm import MockLLM, serve


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = pg.start()
    migrate(url, embed_model="hash", embed_dim=384)
    yield pg, url
    pg.stop()


@pytest.mark.slow  # each request of the outage waits out the pool's DB_POOL_TIMEOUT_S
def test_api_answers_503_while_postgres_is_down_and_recovers(
    own_pg: tuple[EmbeddedPostgres, str],
) -> None:
    pg, url = own_pg
    with connect(url) as db:
        token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "t")
        db.commit()
    with serve(MockLLM()) as mock:
        s = get_settings(
            database_url=url, llm_base_url=mock.url, llm_model="mock", db_pool_timeout_s=2
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(s, embedder=HashEmbedder()), port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.05)
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {token}"}
            chat = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
                assert http.post("/v1/chat/completions", json=chat).status_code == 200
                pg.stop()
                for method, path, body in (
                    ("GET", "/v1/models", None),
                    ("POST", "/v1/chat/completions", chat),
                    ("POST", "/v1/search", {"query": "boiler"}),
                    ("GET", "/v1/conversations", None),
                ):
                    r = http.request(method, path, json=body)
                    assert r.status_code == 503, (path, r.text)
                    assert r.json()["error"]["code"] == "database_unavailable"
                    assert r.headers["Retry-After"] == "5"
                assert pg.start() == url
                deadline = time.monotonic() + 30
                while True:  # the pool heals itself: no restart of the API
                    r = http.post("/v1/chat/completions", json=chat)
                    if r.status_code == 200 or time.monotonic() > deadline:
                        break
                    assert r.status_code == 503, r.text
                    time.sleep(0.5)
                assert r.status_code == 200, r.text
                assert len(http.get("/v1/conversations").json()["data"]) == 2
        finally:
            server.should_exit = True
            thread.join(10)
