"""A non-streamed answer's backend deadline follows its token budget and the backend's measured
speed (bounded by LLM_DEADLINE_MAX_S); a stream keeps its idle timeout (LLM_TIMEOUT_S) between
chunks. The backend here is scripted to generate `tokens_per_s` words a second on a real socket;
the flat timeout of before is LLM_TIMEOUT_S, scaled down to a fraction of a second."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.llm import DEFAULT_TOKENS_PER_S, LLMClient, LLMError
from api.store import accounts
from core.embedder import Embedder
from core.settings import get_settings
from tests.mock_llm import MockLLM, serve

QUESTION = [{"role": "user", "content": "hi"}]
WORDS = " ".join(f"w{i}" for i in range(20))  # 20 tokens, the scripted backend's way


def client(http: httpx.AsyncClient, mock: MockLLM, **kw: Any) -> LLMClient:
    return LLMClient(http, [mock.url], "mock", None, **kw)


async def ask(mock: MockLLM, idle_s: float, *, stream: bool = False, **kw: Any) -> Any:
    async with httpx.AsyncClient(timeout=httpx.Timeout(idle_s, connect=5.0)) as http:
        llm = client(http, mock, **kw)
        if stream:
            return [c async for c in llm.stream(QUESTION, max_tokens=20)], llm
        return await llm.complete(QUESTION, max_tokens=20), llm


def test_a_slow_backend_within_its_budget_answers_where_the_flat_timeout_cut_it() -> None:
    """20 tokens at 10 tokens/s take 2 s: beyond the 0.5 s that used to be the whole request's
    timeout, well within a deadline made for 20 tokens at the conservative default speed."""
    with serve(MockLLM(reply=lambda _: WORDS, tokens_per_s=10)) as mock:
        resp, llm = asyncio.run(ask(mock, 0.5))
    assert resp["choices"][0]["message"]["content"] == WORDS
    assert resp["usage"]["completion_tokens"] == 20
    # the answer measured the backend: 20 tokens in at least 2 s
    speed = llm.backends[0].tokens_per_s
    assert speed is not None and 0 < speed <= 10.5, speed


def test_the_deadline_follows_the_budget_and_the_measured_speed() -> None:
    with serve(MockLLM(reply=lambda _: WORDS, tokens_per_s=40)) as mock:

        async def go() -> tuple[float, float, float | None, float]:
            async with httpx.AsyncClient(timeout=httpx.Timeout(1.0, connect=5.0)) as http:
                llm = client(http, mock, deadline_max_s=10_000)
                b = llm.backends[0]
                before = llm.deadline(b, 512).seconds
                small = llm.deadline(b, 16).seconds
                [c async for c in llm.stream(QUESTION, max_tokens=20)]  # a stream measures too
                return before, small, b.tokens_per_s, llm.deadline(b, 512).seconds

        before, small, speed, after = asyncio.run(go())
    assert small < before  # a smaller budget, a shorter deadline
    assert before >= 1.0 + 512 / DEFAULT_TOKENS_PER_S  # the idle time plus the budget's time
    assert speed is not None and speed > DEFAULT_TOKENS_PER_S, speed
    assert after < before  # measured faster than the default: a shorter deadline


def test_a_budget_beyond_the_maximum_says_what_to_change() -> None:
    with (
        serve(MockLLM(reply=lambda _: WORDS, tokens_per_s=10)) as mock,
        pytest.raises(LLMError) as caught,
    ):
        asyncio.run(ask(mock, 0.3, deadline_max_s=0.6))
    err = caught.value
    assert (err.status, err.code) == (504, "llm_timeout")
    assert "answer budget of 20 tokens" in err.message, err.message
    assert "tokens/s" in err.message and "lower max_tokens or raise LLM_DEADLINE_MAX_S" in (
        err.message
    )


def test_a_backend_slower_than_measured_times_out_and_says_what_to_change() -> None:
    """Measured fast (1000 tokens/s), now at 10: its deadline (idle time + 20 tokens' worth)
    passes; the error names the numbers and LLM_TIMEOUT_S."""

    async def go(mock: MockLLM) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(0.3, connect=5.0)) as http:
            llm = client(http, mock)
            llm.backends[0].tokens_per_s = 1000.0
            await llm.complete(QUESTION, max_tokens=20)

    with (
        serve(MockLLM(reply=lambda _: WORDS, tokens_per_s=10)) as mock,
        pytest.raises(LLMError) as caught,
    ):
        asyncio.run(go(mock))
    err = caught.value
    assert (err.status, err.code) == (504, "llm_timeout")
    assert "the answer budget of 20 tokens at ~1000 tokens/s" in err.message, err.message
    assert "lower max_tokens or raise LLM_TIMEOUT_S" in err.message


def test_a_stream_keeps_its_idle_timeout_between_chunks() -> None:
    """A stream longer than the idle timeout in all is fine while chunks keep coming; one silent
    for longer than it fails."""
    with serve(MockLLM(reply=lambda _: WORDS, tokens_per_s=20)) as mock:
        chunks, _ = asyncio.run(ask(mock, 0.5, stream=True))
        said = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
        )
        assert said.split() == WORDS.split()
        mock.tokens_per_s, mock.delay_s = None, 1.0
        with pytest.raises(LLMError) as caught:
            asyncio.run(ask(mock, 0.3, stream=True))
    assert (caught.value.status, caught.value.code) == (504, "llm_timeout")


def test_a_non_streamed_chat_on_a_slow_backend_is_answered_not_a_504(
    db: psycopg.Connection, pg_url: str, embedder: Embedder
) -> None:
    """Through the app: the answer takes 2 s on a backend the 0.5 s LLM_TIMEOUT_S would have cut
    off (a 504 before); a stream on it keeps the idle timeout."""
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "t")
    db.commit()
    with serve(MockLLM(reply=lambda _: WORDS, tokens_per_s=10)) as mock:
        s = get_settings(
            database_url=pg_url, llm_base_url=mock.url, llm_model="mock", llm_timeout_s=0.5
        )
        with TestClient(create_app(s, embedder=embedder)) as c:
            body = {"model": "mock", "messages": QUESTION, "max_tokens": 20}
            r = c.post(
                "/v1/chat/completions", headers={"Authorization": f"Bearer {token}"}, json=body
            )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].split() == WORDS.split()
