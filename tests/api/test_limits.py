"""The JSON body size limit (api.limits.BodyLimit) on the raw routes, over a real socket to a real
uvicorn: an honest Content-Length over MAX_REQUEST_MB, a Content-Length that promises more than is
ever sent (answered at once, not waited for), and a chunked body with no length at all that grows
past the limit. Every refusal is a 413 in OpenAI's error shape. (tests/api/test_openai_sdk.py
sees the same 413 through the openai SDK.)"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator

import psycopg
import pytest
import uvicorn

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from tests.conftest import free_port
from tests.factories import HashEmbedder
from tests.mock_llm import MockLLM, serve

LIMIT_MB = 0.05
LIMIT = int(LIMIT_MB * 2**20)
ROUTES = ("/v1/chat/completions", "/v1/search")


@pytest.fixture
def server(db: psycopg.Connection, pg_url: str) -> Iterator[tuple[int, str]]:
    """A real uvicorn on a free port with MAX_REQUEST_MB=0.05, and a user's token."""
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "limits")
    db.commit()
    with serve(MockLLM()) as mock:
        s = get_settings(
            database_url=pg_url,
            llm_base_url=mock.url,
            llm_model="mock",
            max_request_mb=LIMIT_MB,
            rate_limit_rps=0,
        )
        port = free_port()
        app = create_app(s, embedder=HashEmbedder())
        srv = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        try:
            while not srv.started:
                assert thread.is_alive()
                time.sleep(0.05)
            yield port, token
        finally:
            srv.should_exit = True
            thread.join(10)


def body_of(route: str, size: int) -> bytes:
    """A well-formed request for `route` of a little more than `size` bytes of JSON."""
    pad = "x" * size
    if route == "/v1/search":
        payload: dict[str, object] = {"query": pad}
    else:
        payload = {"model": "mock", "messages": [{"role": "user", "content": pad}]}
    return json.dumps(payload).encode()


def exchange(port: int, head: str, body: Iterable[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send a request over a raw socket; the response's status, headers and body. The server
    may answer and close before the body is all sent: that is fine."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for part in body:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            assert data, f"connection closed without a response: {buf!r}"
            buf += data
        top, rest = buf.split(b"\r\n\r\n", 1)
        status_line, *lines = top.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
        while len(rest) < int(headers.get("content-length", "0")):
            data = sock.recv(65536)
            if not data:
                break
            rest += data
    return int(status_line.split()[1]), headers, rest


def request_head(route: str, token: str, framing: str) -> str:
    return (
        f"POST {route} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n"
    )


def assert_413(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert "MAX_REQUEST_MB" in error["message"] and f"{LIMIT_MB:g} MB" in error["message"]


def chunked(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        part = data[i : i + size]
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_under_the_limit_gets_through(server: tuple[int, str], route: str) -> None:
    port, token = server
    body = body_of(route, LIMIT - 1000)
    for framing, parts in (
        (f"Content-Length: {len(body)}\r\n", [body]),
        ("Transfer-Encoding: chunked\r\n", chunked(body)),
    ):
        status, _, answer = exchange(port, request_head(route, token, framing), parts)
        # past the limit and into the route, which finds the 50 KB query or prompt too long
        assert status == (422 if route == "/v1/search" else 400), answer[:300]
        if route == "/v1/chat/completions":
            assert json.loads(answer)["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("route", ROUTES)
def test_an_honest_content_length_over_the_limit_is_413(
    server: tuple[int, str], route: str
) -> None:
    port, token = server
    body = body_of(route, LIMIT + 1000)
    head = request_head(route, token, f"Content-Length: {len(body)}\r\n")
    assert_413(*exchange(port, head, [body]))


@pytest.mark.parametrize("route", ROUTES)
def test_a_content_length_that_lies_is_answered_without_waiting_for_the_body(
    server: tuple[int, str], route: str
) -> None:
    port, token = server
    head = request_head(route, token, f"Content-Length: {10**12}\r\n")
    # 1 TB promised, 10 bytes sent: a server waiting for the rest would time the client out
    assert_413(*exchange(port, head, [b'{"query": ']))


@pytest.mark.parametrize("route", ROUTES)
def test_a_chunked_body_growing_past_the_limit_is_413(server: tuple[int, str], route: str) -> None:
    port, token = server
    head = request_head(route, token, "Transfer-Encoding: chunked\r\n")
    assert_413(*exchange(port, head, chunked(body_of(route, 4 * LIMIT))))
