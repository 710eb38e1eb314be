"""A stream whose client goes away gives its slot back (MAX_STREAMS_PER_TOKEN) and closes its
backend request at once, even when giving the slot back has to wait (a Redis round trip): the
client's disconnect cancels the response's task, and that cancellation must not reach the
release (api.routes.chat._released). Before, it could, and the token was refused streams for the
slot key's hour (CI: `test_serve_workers` saw a slot held for 240 s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from api.app import create_app
from api.ratelimit import Limiter
from api.store import accounts
from core.settings import get_settings
from tests.conftest import serve_app
from tests.factories import HashEmbedder
from tests.mock_llm import MockLLM, serve

DEADLINE_S = 15.0  # a deadline, never a pause


@pytest.fixture
def mock() -> Iterator[MockLLM]:
    long_answer = " ".join(f"word{i}" for i in range(400))
    with serve(MockLLM(tokens_per_s=20, reply=lambda messages: long_answer)) as m:
        yield m


def stream_and_leave(base: str, headers: dict[str, str], body: dict[str, object]) -> int:
    """Start a stream; when it is let in, read three words and go away (the connection closes
    mid-answer). The status it was answered with."""
    with (
        httpx.Client(base_url=base, headers=headers, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        if r.status_code != 200:
            r.read()
            return r.status_code
        words = 0
        for line in r.iter_lines():
            words += line.startswith("data: {") and "word" in line
            if words == 3:
                break
        assert words == 3
        return 200


def test_a_client_that_leaves_gives_its_stream_slot_back_at_once(
    db: psycopg.Connection, pg_url: str, mock: MockLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_close = Limiter.close_stream
    released: list[str] = []

    async def close_after_a_round_trip(self: Limiter, key: str) -> None:
        await asyncio.sleep(0.05)  # as reaching Redis does: the release must survive a wait
        await real_close(self, key)
        released.append(key)

    monkeypatch.setattr(Limiter, "close_stream", close_after_a_round_trip)
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "t")
    db.commit()
    settings = get_settings(
        database_url=pg_url, llm_base_url=mock.url, llm_model="mock", max_streams_per_token=1
    )
    body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "Talk."}]}
    headers = {"Authorization": f"Bearer {token}"}
    with serve_app(create_app(settings, embedder=HashEmbedder())) as base:
        for attempt in range(1, 4):  # each stream is left mid-answer; the next must be let in
            deadline = time.monotonic() + DEADLINE_S
            while (status := stream_and_leave(base, headers, body)) == 429:
                assert time.monotonic() < deadline, f"stream {attempt}: the slot never came back"
                time.sleep(0.05)
            assert status == 200
        deadline = time.monotonic() + DEADLINE_S
        while len(released) < 3 or mock.cancelled < 3:
            assert time.monotonic() < deadline, (released, mock.cancelled, mock.finished)
            time.sleep(0.05)
    assert mock.finished == 0  # every abandoned answer was cut at the backend, none ran on
