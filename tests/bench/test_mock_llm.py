"""The mock backend speaks OpenAI's chat protocol at its fixed token rate, streamed or not."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from bench.mock_llm import TOKEN, Mock


async def _with_mock(mock: Mock, fn: Any) -> Any:
    server = await asyncio.start_server(mock.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            return await fn(client)
    finally:
        server.close()
        await server.wait_closed()


def test_streams_the_configured_tokens_then_usage_and_done() -> None:
    async def go(client: httpx.AsyncClient) -> list[str]:
        body = {
            "model": "m",
            "stream": True,
            "max_tokens": 3,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/event-stream"
            return [line async for line in resp.aiter_lines() if line]

    lines = asyncio.run(_with_mock(Mock(model="m", rate=1000, tokens=5), go))
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(filter(None, content)) == TOKEN * 3  # max_tokens caps --tokens
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 3 and chunks[-1]["choices"] == []


def test_models_non_streamed_answer_and_the_arrival_log() -> None:
    async def go(client: httpx.AsyncClient) -> tuple[Any, Any, Any, Any]:
        models = (await client.get("/v1/models")).json()
        body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
        answer = (await client.post("/v1/chat/completions", json=body)).json()
        log = (await client.get("/bench/log")).json()
        return models, answer, log, (await client.get("/bench/log")).json()

    models, answer, log, cleared = asyncio.run(_with_mock(Mock(rate=1000, tokens=4), go))
    assert models["data"][0]["id"] == "mock"
    assert answer["choices"][0]["message"]["content"] == TOKEN * 4
    assert answer["usage"]["completion_tokens"] == 4
    assert [(e["stream"], e["messages"]) for e in log] == [(False, 1)] and log[0]["t"] > 0
    assert cleared == []


def test_one_connection_serves_requests_in_turn_and_unknown_paths_are_404() -> None:
    async def go(client: httpx.AsyncClient) -> list[int]:
        return [(await client.get(p)).status_code for p in ("/v1/models", "/nope", "/v1/models")]

    assert asyncio.run(_with_mock(Mock(), go)) == [200, 404, 200]
