"""The chat relay against a scripted backend on a raw socket, whose every byte and every write is
chosen: plain chat passes the backend's events through byte for byte (only Hearth's own end is
added), a usage event reaches the client only when it asked, and a grounded stream's citations
are checked across events that arrive together or cut a marker in two.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import get_settings
from tests.api.test_chat_api import EMB, seed
from tests.e2e.stack import llm_model_dir

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
MODELS = json.dumps({"object": "list", "data": [{"id": "mock", "max_model_len": 2048}]}).encode()


class ScriptedBackend:
    """Answers every chat request with `script`: each item written on its own (a pause after
    each, so they arrive as separate reads), then the connection closed."""

    def __init__(self) -> None:
        self.script: list[bytes] = []
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if head.startswith(b"GET"):
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(MODELS), MODELS)
            )
        else:
            writer.write(HEAD)
            for piece in self.script:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.02)
        await writer.drain()
        writer.close()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self.handle, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        self.ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()


@pytest.fixture
def backend() -> Iterator[ScriptedBackend]:
    b = ScriptedBackend()
    thread = threading.Thread(target=b.run, daemon=True)
    thread.start()
    assert b.ready.wait(10), "the scripted backend did not start"
    yield b
    b.loop.call_soon_threadsafe(b.loop.stop)
    thread.join(10)


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    return seed(db)


def client(pg_url: str, token: str, backend: ScriptedBackend) -> TestClient:
    s = get_settings(
        database_url=pg_url,
        llm_base_url=backend.url,
        llm_model="mock",
        llm_tokenizer=llm_model_dir(),
        relevance_threshold=0.05,
    )
    return TestClient(create_app(s, embedder=EMB), headers={"Authorization": f"Bearer {token}"})


def event(obj: dict[str, Any], sep: str = ": ") -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", sep)).encode() + b"\n\n"


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    return {
        "id": "b-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "mock",
        "choices": [choice],
    }


USAGE = {
    "id": "b-1",
    "object": "chat.completion.chunk",
    "created": 7,
    "model": "mock",
    "choices": [],
    "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
}
DONE = b"data: [DONE]\n\n"


def plain_script() -> list[bytes]:
    """A backend's own way of writing: its spacing, a comment, two events in one write, an
    event cut mid-JSON across writes, an escaped non-ASCII letter, and text with brackets that
    a grounded answer would take for citation markers."""
    role = {
        **delta(""),
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        ],
    }
    cut = event(delta(" caf\u00e9 [1]"), sep=":")
    return [
        event(role),
        b": a comment the backend sends\n\n",
        event(delta("Use a[0]")) + event(delta(" and b[2],")),
        cut[:25],
        cut[25:],
        event(delta(" done.")) + event(delta("", "stop")),
        event(USAGE),
        DONE,
    ]


def test_plain_chat_passes_the_backends_bytes_through_untouched(
    pg_url: str, token: str, backend: ScriptedBackend, db: psycopg.Connection
) -> None:
    backend.script = plain_script()
    body = {
        "model": "mock",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Say it."}],
    }
    with client(pg_url, token, backend) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    # all but [DONE], which Hearth says itself (the conversation's id is in a header)
    assert r.content == b"".join(backend.script[:-1]) + DONE
    cid = r.headers["X-Conversation-Id"]
    db.rollback()
    stored = db.execute(
        "SELECT content, completion_tokens, incomplete FROM messages"
        " WHERE conversation_id = %s AND role = 'assistant'",
        (cid,),
    ).fetchall()
    assert stored == [("Use a[0] and b[2], caf\u00e9 [1] done.", 5, False)]


def test_the_usage_event_reaches_only_a_client_that_asked_and_is_counted_anyway(
    pg_url: str, token: str, backend: ScriptedBackend, db: psycopg.Connection
) -> None:
    backend.script = plain_script()
    body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "Say it."}]}
    with client(pg_url, token, backend) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.content == b"".join(backend.script[:-2]) + DONE  # without the usage event
    db.rollback()
    tokens = db.execute(
        "SELECT completion_tokens FROM messages WHERE conversation_id = %s AND role = 'assistant'",
        (r.headers["X-Conversation-Id"],),
    ).fetchone()
    assert tokens == (5,)


def test_a_plain_stream_cut_mid_answer_keeps_the_bytes_sent_and_ends_with_an_error(
    pg_url: str, token: str, backend: ScriptedBackend, db: psycopg.Connection
) -> None:
    backend.script = [*plain_script()[:3], b'data: {"choices": [{"index": 0, "del']
    body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "Say it."}]}
    with client(pg_url, token, backend) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.content.startswith(b"".join(backend.script[:3])), r.content
    events = r.content[len(b"".join(backend.script[:3])) :].split(b"\n\n")
    assert len(events) == 3 and events[1:] == [b"data: [DONE]", b""]
    assert b"the language model backend sent a broken event" in events[0]
    db.rollback()
    stored = db.execute(
        "SELECT content, incomplete FROM messages WHERE conversation_id = %s AND role = "
        "'assistant'",
        (r.headers["X-Conversation-Id"],),
    ).fetchall()
    assert stored == [("Use a[0] and b[2],", True)]


def test_a_grounded_stream_checks_markers_across_events_that_arrive_together_or_split(
    pg_url: str, token: str, backend: ScriptedBackend
) -> None:
    backend.script = [
        event(delta("The pressure sensor failed ")) + event(delta("[")),
        event(delta("1")) + event(delta("] and [")),
        event(delta("9] is no passage [1")),
        event(delta(", 1].")) + event(delta("", "stop")) + DONE,
    ]
    body = {
        "model": "hearth",
        "stream": True,
        "messages": [{"role": "user", "content": "What does E-4471 mean?"}],
    }
    with client(pg_url, token, backend) as c:
        r = c.post("/v1/chat/completions", json=body, headers={"X-Hearth-Citations": "none"})
    assert r.status_code == 200, r.text
    chunks = [
        json.loads(line.removeprefix("data: "))
        for line in r.text.split("\n\n")
        if line.startswith("data: {")
    ]
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == "The pressure sensor failed [1] and  is no passage [1]."
    assert all(c["id"] == chunks[0]["id"] and c["model"] == "hearth" for c in chunks)
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert [s["index"] for s in last["sources"]] == [1]
    assert last["sources"][0]["path"] == "/w/boiler.md"
