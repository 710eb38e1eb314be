"""Faults with real processes: the LLM backend is killed (SIGKILL) or frozen (SIGSTOP) while it
streams an answer. The real app (create_app, served by uvicorn on a socket) on the real embedded
PostgreSQL must end the client's stream promptly with the text already sent, an OpenAI-shaped error
event and `[DONE]` (never a hang: the client's read timeout is shorter than the app's own), and
keep the partial answer in the conversation, marked incomplete.

The backend is tests/mock_llm.py run as `python -m tests.mock_llm` in a process of its own. The
LLM client's handling of a reset connection and of a stream that just stops is tested against a
raw socket at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionChunk

from api.app import create_app
from api.llm import LLMClient, LLMError
from api.store import accounts
from core.settings import get_settings
from retrieval import index
from tests.conftest import free_port, serve_app
from tests.factories import HashEmbedder, make_document
from tests.mock_llm import MockLLM, serve

REPO = Path(__file__).resolve().parents[2]
EMB = HashEmbedder()
BOILER = "The boiler error code E-4471 means the pressure sensor failed."
FIRST = "The error code E-4471 means the pressure sensor failed [1]."
# one word every 0.1 s: the whole answer would take 40 s, the test kills the backend long before
REPLY = FIRST + " " + " ".join(f"w{i}" for i in range(400)) + "."
QUESTION = "What does boiler error E-4471 mean?"


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    doc = make_document("/w/boiler.md", [BOILER], title="boiler.md")
    doc.collection = "house"
    index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    return token


class Backend:
    """`python -m tests.mock_llm` in its own process, announcing each request on stdout."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.mock_llm", "--port", str(self.port), "--announce", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the mock LLM process did not start")
            time.sleep(0.1)

    def wait_for_request(self, timeout: float = 10) -> None:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout), "the backend got no request"
        assert self.proc.stdout.readline().strip() == "request"

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # a stopped (SIGSTOP) process dies of SIGKILL too
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def backend(*args: str) -> Iterator[Backend]:
    b = Backend(*args)
    try:
        yield b
    finally:
        b.stop()


@contextmanager
def api(pg_url: str, llm_url: str, **settings: Any) -> Iterator[str]:
    """The real app on a real socket (a read timeout needs one); yields its base URL."""
    s = get_settings(
        database_url=pg_url,
        llm_base_url=llm_url,
        llm_model="mock",
        relevance_threshold=0.05,
        answer_check="off",  # the scripted filler is in no passage: the check would hold it
        **settings,
    )
    with serve_app(create_app(s, embedder=EMB)) as url:
        yield url


def data_of(line: str) -> Any:
    data = line[len("data: ") :]
    return data if data == "[DONE]" else json.loads(data)


def content(events: list[Any]) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for e in events
        if isinstance(e, dict)
        for c in e.get("choices") or []
    )


@pytest.mark.parametrize(
    ("sig", "settings", "code", "message"),
    [
        # killed: the kernel closes its socket, the chunked body ends early
        (signal.SIGKILL, {"llm_timeout_s": 60.0}, "llm_backend_error", "backend failed"),
        # frozen: the connection stays open and silent until LLM_TIMEOUT_S
        (signal.SIGSTOP, {"llm_timeout_s": 2.0}, "llm_timeout", "timed out"),
    ],
    ids=["killed", "frozen"],
)
def test_a_backend_that_dies_mid_stream_ends_the_stream_and_keeps_the_partial_answer(
    pg_url: str,
    token: str,
    sig: signal.Signals,
    settings: dict[str, Any],
    code: str,
    message: str,
) -> None:
    headers = {"Authorization": f"Bearer {token}", "X-Hearth-Footer": "off"}
    body = {"model": "hearth", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    with (
        backend("--reply", REPLY, "--delay", "0.1") as llm,
        api(pg_url, llm.url, **settings) as base,
        httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(15)) as http,
    ):
        events: list[Any] = []
        with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            cid = resp.headers["X-Conversation-Id"]
            signalled = False
            for line in resp.iter_lines():  # a hang is an httpx.ReadTimeout here
                if not line.startswith("data: "):
                    continue
                events.append(data_of(line))
                if not signalled and "w3 " in content(events):  # the first tokens are in
                    llm.signal(sig)
                    signalled = True
        assert signalled, events

        said = content(events)
        assert said.startswith(FIRST + " w0 w1 w2 w3 ") and "w399" not in said
        error, done = events[-2:]
        assert done == "[DONE]"
        assert error["error"]["code"] == code and error["error"]["type"] == "api_error"
        assert message in error["error"]["message"]
        assert "choices" not in error
        chunks = events[:-2]
        for e in chunks:
            ChatCompletionChunk.model_validate(e)
            assert all(c["finish_reason"] is None for c in e["choices"])  # it did not finish
        # the last chunk before the error carries the partial answer's sources
        assert chunks[-1]["conversation_id"] == cid
        assert [s["path"] for s in chunks[-1]["sources"]] == ["/w/boiler.md"]

        stored = http.get(f"/v1/conversations/{cid}").json()
        question, answer = stored["messages"]
        assert question["content"] == QUESTION and question["incomplete"] is False
        assert answer["incomplete"] is True and answer["withheld"] is False
        assert answer["content"] == said  # exactly what the client received
        assert [(s["path"], s["cited_by"]) for s in answer["sources"]] == [
            ("/w/boiler.md", "model")
        ]


def test_a_backend_killed_before_a_non_streamed_answer_is_a_502_and_stores_nothing(
    pg_url: str, token: str
) -> None:
    """A JSON answer is all or nothing: no part of it is usable, so nothing is kept."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"model": "hearth", "messages": [{"role": "user", "content": QUESTION}]}
    with (
        backend("--reply", REPLY, "--complete-delay", "60") as llm,
        api(pg_url, llm.url, llm_timeout_s=60.0) as base,
        httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(15)) as http,
    ):
        answered: list[httpx.Response] = []
        asking = threading.Thread(
            target=lambda: answered.append(http.post("/v1/chat/completions", json=body))
        )
        asking.start()
        llm.wait_for_request()
        llm.signal(signal.SIGKILL)
        asking.join(20)
        (r,) = answered
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "llm_backend_error"
        assert http.get("/v1/conversations").json()["data"] == []


# --- the app on one socket backend, the LLM client on raw sockets ----------------------------


def test_an_incomplete_answer_is_replayed_as_history(pg_url: str, token: str) -> None:
    with serve(MockLLM()) as mock:
        s = get_settings(database_url=pg_url, llm_base_url=mock.url, llm_model="mock")
        with TestClient(
            create_app(s, embedder=EMB), headers={"Authorization": f"Bearer {token}"}
        ) as c:
            cid = c.post("/v1/chat/completions", json=plain("first")).headers["X-Conversation-Id"]
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE messages SET content = 'Half an ans', incomplete = true"
                    " WHERE conversation_id = %s AND role = 'assistant'",
                    (cid,),
                )
            got = c.get(f"/v1/conversations/{cid}").json()["messages"]
            assert [(m["content"], m["incomplete"]) for m in got] == [
                ("first", False),
                ("Half an ans", True),
            ]
            c.post("/v1/chat/completions", json=plain("go on"), headers={"X-Conversation-Id": cid})
    sent = [(m["role"], m["content"]) for m in mock.requests[-1]["messages"]]
    assert sent[-3:] == [("user", "first"), ("assistant", "Half an ans"), ("user", "go on")]


def plain(question: str) -> dict[str, Any]:
    return {"model": "mock", "messages": [{"role": "user", "content": question}]}


def sse_chunk(obj: dict[str, Any]) -> bytes:
    data = f"data: {json.dumps(obj)}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


WORD = {"choices": [{"index": 0, "delta": {"content": "Half "}, "finish_reason": None}]}
STOP = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
UNFRAMED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


async def stream_from(send: bytes, end: str) -> tuple[list[dict[str, Any]], LLMError | None]:
    """Stream one answer from a raw socket that sends `send`, then closes ("close") or resets
    ("reset") the connection; the chunks the LLM client yielded, and what it raised."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(send)
        await writer.drain()
        if end == "reset":  # SO_LINGER 0: the close is a RST, as from a crashed peer's kernel
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got: list[dict[str, Any]] = []
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            client = LLMClient(http, [f"http://127.0.0.1:{port}/v1"], "m")
            try:
                async for item in client.stream([{"role": "user", "content": "q"}]):
                    got.append(item)
            except LLMError as exc:
                return got, exc
    finally:
        server.close()
        await server.wait_closed()
    return got, None


@pytest.mark.parametrize(
    ("send", "end", "failure"),
    [
        (CHUNKED + sse_chunk(WORD), "reset", "the language model backend failed"),
        (CHUNKED + sse_chunk(WORD), "close", "the language model backend failed: peer closed"),
        (UNFRAMED + b"data: " + json.dumps(WORD).encode() + b"\n\n", "close", "ended mid-answer"),
        (UNFRAMED + b"data: " + json.dumps(WORD).encode() + b"\n\ndata: {", "close", "broken"),
        (CHUNKED + sse_chunk(WORD) + sse_chunk(STOP), "reset", None),  # finished before [DONE]
    ],
    ids=["reset", "cut-chunked", "cut-unframed", "cut-mid-line", "after-finish"],
)
def test_the_llm_client_raises_after_the_chunks_a_dying_backend_sent(
    send: bytes, end: str, failure: str | None
) -> None:
    got, exc = asyncio.run(stream_from(send, end))
    assert got[0] == WORD
    if failure is None:
        assert exc is None and got[-1] == STOP
    else:
        assert exc is not None and exc.status == 502 and failure in exc.message, exc
