"""api.backend_transport against real sockets: the LLM client over it sees what it saw over
httpx's own transport (the same chunks, the same errors), connections are kept alive and reused,
a stream left unread closes its connection, and https works with a certificate it trusts."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from api.backend_transport import BackendTransport, backend_client
from api.llm import LLMClient, LLMError
from tests.factories import self_signed_certificate, until
from tests.mock_llm import MockLLM, serve

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
QUESTION = [{"role": "user", "content": "q"}]
WORD = {"choices": [{"index": 0, "delta": {"content": "Half "}, "finish_reason": None}]}
STOP = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
ERROR = {"error": {"code": 500, "message": "Compute error.", "type": "server_error"}}
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
UNFRAMED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


def sse_chunk(obj: Any) -> bytes:
    data = f"data: {json.dumps(obj)}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body) from `reader`; b"" when the client left."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def raw_server(handle: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A server on a free port running `handle` for each connection; on leaving, it waits for
    the handlers to end (the clients gone), and cancels those still waiting after 10 s."""
    handlers: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def client(**kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=BackendTransport(**kw), timeout=10)


# --- the LLM client over it: the same chunks and errors as over httpx's transport ---------------


async def stream_from(send: bytes, end: str, http: httpx.AsyncClient) -> tuple[list[Any], Any]:
    """Stream one answer from a raw socket that sends `send`, then closes ("close") or resets
    ("reset") the connection; the chunks the LLM client yielded, and what it raised."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(send)
        await writer.drain()
        if end == "reset":  # SO_LINGER 0: the close is a RST, as from a crashed peer's kernel
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    got: list[dict[str, Any]] = []
    async with raw_server(handle) as port, http:
        llm = LLMClient(http, [f"http://127.0.0.1:{port}/v1"], "m")
        try:
            async for item in llm.stream(QUESTION):
                got.append(item)
        except LLMError as exc:
            return got, exc
    return got, None


@pytest.mark.parametrize(
    ("send", "end"),
    [
        (CHUNKED + sse_chunk(WORD), "reset"),
        (CHUNKED + sse_chunk(WORD), "close"),
        (CHUNKED + sse_chunk(WORD) + b"40\r\ndata: {", "close"),  # cut mid-chunk
        (UNFRAMED + b"data: " + json.dumps(WORD).encode() + b"\n\n", "close"),
        (UNFRAMED + b"data: " + json.dumps(WORD).encode() + b"\n\ndata: {", "close"),
        (CHUNKED + sse_chunk(WORD) + sse_chunk(STOP), "reset"),  # finished before [DONE]
        (
            CHUNKED + sse_chunk(WORD) + sse_chunk(STOP) + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n",
            "close",
        ),
        # an error event in the same read as the text before it (llama.cpp's way mid-answer):
        # the text still reaches the caller, then the error
        (CHUNKED + sse_chunk(WORD) + sse_chunk(ERROR) + b"0\r\n\r\n", "close"),
        (
            UNFRAMED
            + b"data: "
            + json.dumps(WORD).encode()
            + b"\n\ndata: "
            + json.dumps(ERROR).encode()
            + b"\n\n",
            "close",
        ),
    ],
    ids=[
        "reset",
        "cut-chunked",
        "cut-mid-chunk",
        "cut-unframed",
        "cut-mid-line",
        "after-finish",
        "whole",
        "error-event-chunked",
        "error-event-unframed",
    ],
)
def test_a_dying_backend_looks_the_same_as_over_httpx_transport(send: bytes, end: str) -> None:
    """The chunks yielded and the LLMError raised (status, code, message) are those of httpx's
    own transport, for each way a backend can die mid-answer; and the text before an error
    event is relayed whichever way the backend framed them."""
    ours = asyncio.run(stream_from(send, end, client()))
    theirs = asyncio.run(stream_from(send, end, httpx.AsyncClient(timeout=10)))
    assert ours[0] == theirs[0] and ours[0][0] == WORD
    if theirs[1] is None:
        assert ours[1] is None
    else:
        assert ours[1] is not None and ours[1].status == theirs[1].status == 502
        assert ours[1].code == theirs[1].code
        # httpx says nothing of a reset ("failed: "); this transport names it
        assert ours[1].message.startswith(theirs[1].message), (ours[1], theirs[1])


def run_in(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """`main` in asyncio's own event loop or in uvloop's (the one uvicorn serves the API in)."""
    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_streams_over_one_kept_alive_connection_and_a_left_stream_closes_it(loop: str) -> None:
    """Three answers in a row reuse one connection (read on to the end after [DONE]); a stream
    the caller leaves mid-answer closes its connection, which the backend sees (vLLM aborts)."""

    async def main(mock: MockLLM) -> None:
        transport = BackendTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            llm = LLMClient(http, [mock.url], "mock")
            for _ in range(3):
                chunks = [c async for c in llm.stream(QUESTION)]
                text = "".join(
                    c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
                )
                assert text == "A plain answer. "
            assert transport.opened == 1 and len(mock.peers) == 1
            models = await llm.models()  # a Content-Length body on the same connection
            assert models[0]["id"] == "mock" and transport.opened == 1
            mock.delay_s = 0.05
            stream = llm.stream(QUESTION)
            assert (await anext(stream))["choices"][0]["delta"]["content"] == "A "
            await stream.aclose()  # type: ignore[attr-defined]
            await asyncio.to_thread(
                until, lambda: mock.cancelled == 1, 10, "the backend saw the client go"
            )
            mock.delay_s = 0.0
            assert [c async for c in llm.stream(QUESTION)][-1]["choices"][0][
                "finish_reason"
            ] == "stop"
            assert transport.opened == 2  # the abandoned connection was not reused

    with serve(MockLLM()) as mock:
        run_in(loop, main(mock))


def test_a_refused_connection_is_a_backend_down() -> None:
    async def main() -> None:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}/v1"
        async with client() as http:
            with pytest.raises(httpx.ConnectError) as raw:
                await http.get(url + "/models")
            assert raw.value.request.url == url + "/models"
            llm = LLMClient(http, [url], "m")
            with pytest.raises(LLMError) as err:
                [c async for c in llm.stream(QUESTION)]
            assert (err.value.status, err.value.code) == (503, "llm_unavailable")
            assert not llm.backends[0].healthy and llm.backends[0].gone

    asyncio.run(main())


def test_a_silent_backend_is_a_read_timeout() -> None:
    """Headers never come, or the body stops: httpx.ReadTimeout at the request's read timeout;
    the LLM client makes it a 504."""

    async def main() -> None:
        release = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await release.wait()
            writer.close()

        async with raw_server(handle) as port:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(
                transport=BackendTransport(), timeout=httpx.Timeout(0.2, connect=5.0)
            ) as http:
                with pytest.raises(httpx.ReadTimeout):
                    await http.get(base + "/models")
                llm = LLMClient(http, [base + "/v1"], "m")
                with pytest.raises(LLMError) as err:
                    [c async for c in llm.stream(QUESTION)]
                assert (err.value.status, err.value.code) == (504, "llm_timeout")
            release.set()

    asyncio.run(main())


def test_a_shorter_read_timeout_on_a_kept_alive_connection_is_honoured() -> None:
    """One timer per connection: a request with a shorter read timeout than the one before on
    the same connection still times out at its own (not after the 60 s of the first)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the second is never answered
        await reader.read()

    async def main() -> None:
        async with raw_server(handle) as port:
            transport = BackendTransport()
            async with httpx.AsyncClient(transport=transport, timeout=60) as http:
                url = f"http://127.0.0.1:{port}/"
                assert (await http.get(url)).text == "ok"
                async with asyncio.timeout(20):  # far past 0.2 s, far before 60 s
                    with pytest.raises(httpx.ReadTimeout):
                        await http.get(url, timeout=0.2)
                assert transport.opened == 1

    asyncio.run(main())


def test_a_body_that_stops_midway_is_a_read_timeout() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED + sse_chunk(WORD))
        await writer.drain()
        await reader.read()  # until the client gives up
        writer.close()

    async def main() -> None:
        async with (
            raw_server(handle) as port,
            httpx.AsyncClient(
                transport=BackendTransport(), timeout=httpx.Timeout(0.2, connect=5.0)
            ) as http,
        ):
            llm = LLMClient(http, [f"http://127.0.0.1:{port}/v1"], "m")
            got = []
            with pytest.raises(LLMError) as err:
                async for c in llm.stream(QUESTION):
                    got.append(c)
            assert got == [WORD] and err.value.code == "llm_timeout"

    asyncio.run(main())


# --- HTTP/1.1 framing ---------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_chunked_bodies_split_anywhere_come_out_whole(loop: str) -> None:
    """A chunked body written a byte at a time (sizes, extensions, CRLFs and trailers split
    anywhere) comes out as the same bytes, and the connection then serves the next request."""
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (b"hello ", b"", b"x" * 300)[::2])
    wire = CHUNKED + body + b"0\r\nx-trailer: yes\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            for i in range(len(wire)):
                writer.write(wire[i : i + 1])
                await writer.drain()
        writer.close()

    async def main() -> None:
        async with raw_server(handle) as port:
            transport = BackendTransport()
            async with httpx.AsyncClient(transport=transport, timeout=10) as http:
                for _ in range(2):
                    async with http.stream("GET", f"http://127.0.0.1:{port}/") as resp:
                        parts = [p async for p in resp.aiter_raw()]
                    assert b"".join(parts) == b"hello " + b"x" * 300
                assert transport.opened == 1

    run_in(loop, main())


def test_content_length_close_and_malformed_responses() -> None:
    answers = {
        b"/sized": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        b"/close": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        b"/bad": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
        b"/junk": b"SMTP ready\r\n\r\n",
        b"/short": b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf",
    }

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            path = request.split(b" ")[1]
            writer.write(answers[path])
            await writer.drain()
            if path != b"/sized":
                break
        writer.close()

    async def main() -> None:
        async with raw_server(handle) as port:
            base = f"http://127.0.0.1:{port}"
            transport = BackendTransport()
            async with httpx.AsyncClient(transport=transport, timeout=10) as http:
                for _ in range(2):
                    assert (await http.get(base + "/sized")).text == "hello"
                assert transport.opened == 1
                assert (await http.get(base + "/close")).text == "ok"
                assert (await http.get(base + "/sized")).text == "hello"  # a new connection
                assert transport.opened == 2
                for path in ("/bad", "/junk", "/short"):
                    with pytest.raises(httpx.RemoteProtocolError):
                        await http.get(base + path)

    asyncio.run(main())


def test_an_idle_connection_the_backend_closed_is_not_reused() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # its keep-alive timeout, at once

    async def main() -> None:
        async with raw_server(handle) as port:
            transport = BackendTransport()
            async with httpx.AsyncClient(transport=transport, timeout=10) as http:
                assert (await http.get(f"http://127.0.0.1:{port}/")).text == "ok"
                idle = transport._idle[(b"http", b"127.0.0.1", port)][0]
                await asyncio.wait_for(_until_eof(idle), 10)
                assert (await http.get(f"http://127.0.0.1:{port}/")).text == "ok"
                assert transport.opened == 2

    asyncio.run(main())


async def _until_eof(conn: Any) -> None:
    while not conn.eof:
        await asyncio.sleep(0.01)


def test_a_streamed_request_body_is_sent_chunked() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        body = await reader.readuntil(b"0\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def parts() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cde"

    async def main() -> None:
        async with raw_server(handle) as port, client() as http:
            resp = await http.post(f"http://127.0.0.1:{port}/", content=parts())
            assert resp.content == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"

    asyncio.run(main())


# --- TLS and proxies ----------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and the certificate."""
    cert_file, key_file = self_signed_certificate(tmp)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, cert_file


def test_an_https_backend(tmp_path: Path) -> None:
    """Streams over TLS with a certificate the client trusts; one it does not is a ConnectError
    (a backend down), as over httpx's transport."""
    server_tls, cert = self_signed(tmp_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(CHUNKED + sse_chunk(WORD) + sse_chunk(STOP) + b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        async with raw_server(handle, server_tls) as port:
            url = f"https://127.0.0.1:{port}/v1"
            trusted = ssl.create_default_context(cafile=str(cert))
            transport = BackendTransport(verify=trusted)
            async with httpx.AsyncClient(transport=transport, timeout=10) as http:
                llm = LLMClient(http, [url], "m")
                for _ in range(2):
                    assert [c async for c in llm.stream(QUESTION)] == [WORD, STOP]
                assert transport.opened == 1
            async with client() as http:  # the default trust store does not know it
                with pytest.raises(httpx.ConnectError):
                    await http.get(url + "/models")

    asyncio.run(main())


def test_a_proxy_in_the_environment_keeps_httpx_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = backend_client(httpx.Timeout(5.0))
    assert isinstance(ours._transport, BackendTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    theirs = backend_client(httpx.Timeout(5.0))
    assert not isinstance(theirs._transport, BackendTransport)
    asyncio.run(ours.aclose())
    asyncio.run(theirs.aclose())
