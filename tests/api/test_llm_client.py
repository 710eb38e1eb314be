"""The LLM client keeps one HTTP/1.1 connection to a backend across requests, streamed or not
(a new TCP connection per answer costs time to first token and throughput)."""

from __future__ import annotations

import asyncio

import httpx

from api.llm import LLMClient
from tests.mock_llm import MockLLM, serve


def test_answers_reuse_one_backend_connection() -> None:
    async def go(mock: MockLLM) -> list[str]:
        async with httpx.AsyncClient() as http:
            llm = LLMClient(http, [mock.url], "mock", None)
            said = []
            for _ in range(3):
                chunks = [c async for c in llm.stream([{"role": "user", "content": "hi"}])]
                said.append(
                    "".join(
                        c["choices"][0]["delta"].get("content") or ""
                        for c in chunks
                        if c.get("choices")
                    )
                )
            done = await llm.complete([{"role": "user", "content": "hi"}])
            said.append(done["choices"][0]["message"]["content"])
            return said

    with serve(MockLLM()) as mock:
        said = asyncio.run(go(mock))
    assert [s.strip() for s in said] == ["A plain answer."] * 4
    assert mock.finished == 3 and len(mock.requests) == 4
    assert len(mock.peers) == 1, mock.peers  # one connection served all four
