"""A lean HTTP/1.1 transport for httpx, for the LLM backends: keep-alive connections over asyncio.

httpx's own transport (httpcore + h11, pure Python) costs ~50 µs per read of a backend's stream;
this one reads the socket through a plain asyncio protocol and undoes the chunked framing of
everything that arrived together in one pass, so a relayed stream costs a few µs per read. It
keeps httpx's API and exceptions: LLMClient and api.backends see the same `httpx.Response`, the
same timeouts (the request's `extensions["timeout"]`) and the same errors (ConnectError,
ConnectTimeout, ReadTimeout, WriteTimeout, ReadError, WriteError, RemoteProtocolError) as before.

It speaks only what a backend needs: HTTP/1.1, bodies framed by Content-Length, by chunks or by
the connection's end, TLS for https URLs (httpx's certificate handling), idle connections kept
per origin for `keepalive_expiry` seconds. No proxies: `backend_client` keeps httpx's transport
when the environment names one.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

MAX_HEAD = 64 * 1024  # a response head larger than this is refused
HIGH_WATER = 256 * 1024  # unread bytes past this pause the socket's reading
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_NO_BODY_STATUS = (204, 304)

Origin = tuple[bytes, bytes, int]


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: what arrived and not yet read, and a waiter for more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []  # what arrived and is not read yet
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.writable: asyncio.Future[None] | None = None  # set while the write buffer is full
        self.idle_since = 0.0
        self.deadline: float | None = None  # when the waiting read times out (loop time)
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is no subclass)

    def data_received(self, data: bytes) -> None:
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = self.error or exc
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._wake()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- used by the transport -----------------------------------------------------------------
    def usable(self, now: float, expiry: float) -> bool:
        """An idle connection that can carry another request: open, nothing unasked-for sent."""
        t = self.transport
        return (
            t is not None
            and not t.is_closing()
            and not self.eof
            and not self.buffer
            and now - self.idle_since < expiry
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def read(self, timeout: float | None) -> bytes:
        """What has arrived (at least one byte), or b"" at the end of the stream."""
        if not self.buffer and not self.eof:
            self.waiter = waiter = self.loop.create_future()
            self._arm(timeout)
            try:
                await waiter
            finally:
                self.waiter = None
            if not self.buffer and not self.eof:
                raise httpx.ReadTimeout("timed out reading from the backend")
        if self.buffer:
            buffer = self.buffer
            data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
            self.buffer, self.buffered = [], 0
            if self.paused and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
            return data
        if self.error is not None:
            raise httpx.ReadError(str(self.error) or type(self.error).__name__)
        return b""

    def _arm(self, timeout: float | None) -> None:
        """Wake the waiting read at its deadline. One timer per connection, moved on only when
        it fires (a stream's reads come far more often than its timeout): no timer to make
        and cancel on every read."""
        if timeout is None:
            self.deadline = None
            return
        self.deadline = deadline = self.loop.time() + timeout
        timer = self.timer
        if timer is not None and timer.when() > deadline:  # a shorter timeout than the last
            timer.cancel()
            timer = None
        if timer is None:
            self.timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self.timer = None
        waiter, deadline = self.waiter, self.deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # no read is waiting: the next one arms the timer again
        if self.loop.time() >= deadline:
            waiter.set_result(None)  # read() finds nothing arrived: a timeout
        else:
            self.timer = self.loop.call_at(deadline, self._expire)

    async def write(self, data: bytes, timeout: float | None) -> None:
        t = self.transport
        if t is None or t.is_closing() or self.error is not None:
            raise httpx.WriteError(str(self.error or "the connection is closed"))
        t.write(data)
        writable = self.writable
        if writable is None or writable.done():
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(writable)
        except TimeoutError:
            raise httpx.WriteTimeout("timed out writing to the backend") from None
        if self.error is not None:
            raise httpx.WriteError(str(self.error))


class BackendTransport(httpx.AsyncBaseTransport):
    """httpx's AsyncBaseTransport over asyncio: HTTP/1.1 with idle connections kept per origin
    (at most `max_keepalive` each, for `keepalive_expiry` seconds) and no connection limit."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        max_keepalive: int = 512,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # made at the first https request
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[Origin, list[_Connection]] = {}
        self.opened = 0  # connections opened so far (tests and benchmarks read it)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        port = url.port or (443 if scheme == b"https" else 80)
        origin: Origin = (scheme, url.raw_host, port)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        conn = self._take(origin) or await self._connect(origin, timeouts.get("connect"), request)
        try:
            await self._send(conn, request, timeouts.get("write"))
            status, reason, headers, body = await self._head(conn, request, timeouts.get("read"))
        except BaseException:
            conn.abort()
            raise
        keep = _keep_alive(headers, request)
        stream = _Body(self, origin, conn, body, request, timeouts.get("read"), keep)
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # --- connections -----------------------------------------------------------------------
    def _take(self, origin: Origin) -> _Connection | None:
        conns = self._idle.get(origin)
        now = time.monotonic()
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to have expired
            if conn.usable(now, self.keepalive_expiry):
                return conn
            conn.close()
        return None

    def _give_back(self, origin: Origin, conn: _Connection) -> None:
        conns = self._idle.setdefault(origin, [])
        if len(conns) >= self.max_keepalive:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)

    async def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        name = host.decode("ascii")
        tls = None
        if scheme == b"https":
            if self._ssl is None:
                self._ssl = (
                    self._verify
                    if isinstance(self._verify, ssl.SSLContext)
                    else httpx.create_ssl_context(verify=self._verify)
                )
            tls = self._ssl
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    name,
                    port,
                    ssl=tls,
                    server_hostname=name if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                "timed out connecting to the backend", request=request
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        self.opened += 1
        return conn

    # --- one exchange --------------------------------------------------------------------------
    async def _send(self, conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
        chunked = False
        for name, value in request.headers.raw:
            if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"\r\n")
        pending = b"".join(head)
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        try:
            async for part in stream:
                if not part:
                    continue
                if chunked:
                    part = b"%x\r\n%s\r\n" % (len(part), part)
                await conn.write(pending + part, timeout)
                pending = b""
            if chunked:
                pending += b"0\r\n\r\n"
            if pending:
                await conn.write(pending, timeout)
        except httpx.TransportError as exc:
            exc.request = request
            raise

    async def _head(
        self, conn: _Connection, request: httpx.Request, timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], _Framing]:
        data = b""
        try:
            while True:
                end = data.find(b"\r\n\r\n")
                while end < 0:
                    if len(data) > MAX_HEAD:
                        raise httpx.RemoteProtocolError("the backend's response head is too long")
                    more = await conn.read(timeout)
                    if not more:
                        raise httpx.RemoteProtocolError(
                            "Server disconnected without sending a response."
                        )
                    data += more
                    end = data.find(b"\r\n\r\n", max(0, len(data) - len(more) - 3))
                status, reason, headers = _parse_head(data[:end])
                data = data[end + 4 :]
                if 100 <= status < 200 and status != 101:
                    continue  # an interim answer (100 Continue): the real one follows
                break
        except httpx.TransportError as exc:
            exc.request = request
            raise
        framing = _framing(status, headers, request.method)
        framing.leftover = data
        return status, reason, headers, framing


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"the backend sent a malformed status line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"the backend sent a malformed header {line!r}")
        headers.append((name, value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


class _Framing:
    """How the body ends: after `length` bytes, at its last chunk, or at the connection's end."""

    def __init__(self, length: int | None, chunked: bool) -> None:
        self.length, self.chunked = length, chunked
        self.leftover = b""


def _framing(status: int, headers: list[tuple[bytes, bytes]], method: str) -> _Framing:
    if method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
        return _Framing(0, False)
    length: int | None = None
    for name, value in headers:
        lname = name.lower()
        if lname == b"transfer-encoding":
            if value.lower().rsplit(b",", 1)[-1].strip() == b"chunked":
                return _Framing(None, True)
            return _Framing(None, False)  # another coding: the body ends with the connection
        if lname == b"content-length":
            try:
                length = int(value.split(b",")[0])
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"the backend sent a malformed Content-Length {value!r}"
                ) from None
            if length < 0:
                raise httpx.RemoteProtocolError(f"the backend sent Content-Length {length}")
    return _Framing(length, False)


def _keep_alive(headers: list[tuple[bytes, bytes]], request: httpx.Request) -> bool:
    for name, value in headers:
        if name.lower() == b"connection" and b"close" in value.lower():
            return False
    return b"close" not in request.headers.get("connection", "").lower().encode()


class _Body(httpx.AsyncByteStream):
    """A response's body, one read of the socket at a time (the chunked framing taken out of
    everything that arrived together); the connection goes back to the pool once the body has
    been read to its end, and is closed when the body is left unread."""

    def __init__(
        self,
        owner: BackendTransport,
        origin: Origin,
        conn: _Connection,
        framing: _Framing,
        request: httpx.Request,
        timeout: float | None,
        keep: bool,
    ) -> None:
        self.owner, self.origin, self.conn = owner, origin, conn
        self.framing, self.request, self.timeout, self.keep = framing, request, timeout, keep
        self.state = "open"  # then "done" (read to its end) or "closed"

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self.state != "open":
            raise httpx.StreamClosed()
        f = self.framing
        if f.chunked:
            return self._chunked(f.leftover)
        if f.length is not None:
            return self._sized(f.leftover, f.length)
        return self._until_closed(f.leftover)

    async def aclose(self) -> None:
        if self.state == "open":
            self._close()

    def _finish(self) -> None:
        if self.state != "open":
            return
        self.state = "done"
        if self.keep:
            self.owner._give_back(self.origin, self.conn)
        else:
            self.conn.close()

    def _close(self) -> None:
        self.state = "closed"
        self.conn.abort()

    async def _sized(self, data: bytes, length: int) -> AsyncIterator[bytes]:
        left = length
        try:
            while left > 0:
                if not data:
                    data = await self.conn.read(self.timeout)
                    if not data:
                        raise httpx.RemoteProtocolError(
                            "peer closed connection without sending complete message body "
                            f"(received {length - left} bytes, expected {length})"
                        )
                if len(data) > left:
                    self.keep = False  # bytes past the body: the connection is out of step
                    data = data[:left]
                left -= len(data)
                yield data
                data = b""
        except BaseException:
            self._close()
            raise
        self._finish()

    async def _until_closed(self, data: bytes) -> AsyncIterator[bytes]:
        self.keep = False
        try:
            if data:
                yield data
            while data := await self.conn.read(self.timeout):
                yield data
        except BaseException:
            self._close()
            raise
        self._finish()

    async def _chunked(self, data: bytes) -> AsyncIterator[bytes]:
        """Undo the chunked framing: the payload of everything that arrived together, as one
        piece."""
        left = 0  # payload bytes still to come in the current chunk
        crlf = False  # the CRLF after a chunk's payload is still to come
        pos = 0
        conn, timeout = self.conn, self.timeout
        try:
            while True:
                out: list[bytes] = []
                size = len(data)
                while pos < size:
                    if left:
                        end = min(size, pos + left)
                        out.append(data[pos:end])
                        left -= end - pos
                        pos = end
                        crlf = left == 0
                    elif crlf:
                        if size - pos < 2:
                            break
                        if data[pos : pos + 2] != b"\r\n":
                            raise httpx.RemoteProtocolError("the backend sent a malformed chunk")
                        pos += 2
                        crlf = False
                    else:
                        eol = data.find(b"\r\n", pos)
                        if eol < 0:
                            if size - pos > 1024:
                                raise httpx.RemoteProtocolError(
                                    "the backend sent a malformed chunk"
                                )
                            break
                        try:
                            left = int(data[pos:eol].split(b";", 1)[0], 16)
                        except ValueError:
                            raise httpx.RemoteProtocolError(
                                f"the backend sent a malformed chunk size {data[pos:eol][:40]!r}"
                            ) from None
                        if left < 0:
                            raise httpx.RemoteProtocolError("the backend sent a negative chunk")
                        pos = eol + 2
                        if left == 0:
                            if out:
                                yield b"".join(out)
                            await self._trailers(data[pos:])
                            self._finish()
                            return
                if out:
                    yield out[0] if len(out) == 1 else b"".join(out)
                data = data[pos:]
                pos = 0
                more = await conn.read(timeout)
                if not more:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body "
                        "(incomplete chunked read)"
                    )
                data = data + more if data else more
        except BaseException:
            self._close()
            raise

    async def _trailers(self, data: bytes) -> None:
        """Read past the trailer section (usually just its closing CRLF)."""
        while True:
            if data.startswith(b"\r\n"):
                rest = data[2:]
                break
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                rest = data[end + 4 :]
                break
            if len(data) > MAX_HEAD:
                raise httpx.RemoteProtocolError("the backend's trailers are too long")
            more = await self.conn.read(self.timeout)
            if not more:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    "(incomplete chunked read)"
                )
            data += more
        if rest:
            self.keep = False  # bytes nobody asked for: the connection is out of step


def proxied() -> bool:
    """The environment names a proxy, which httpx (trust_env) would use and this does not."""
    return any(os.environ.get(k) or os.environ.get(k.lower()) for k in _PROXY_ENV)


def backend_client(
    timeout: httpx.Timeout, max_keepalive: int = 512, **kw: Any
) -> httpx.AsyncClient:
    """The httpx client for the LLM backends: over BackendTransport, or over httpx's own when a
    proxy is configured in the environment (which only httpx's honours)."""
    if proxied():
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max_keepalive)
        return httpx.AsyncClient(timeout=timeout, limits=limits, **kw)
    return httpx.AsyncClient(
        timeout=timeout, transport=BackendTransport(max_keepalive=max_keepalive), **kw
    )
