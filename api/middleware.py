"""Middleware that must see every /v1 request: the credentials gate and the request log; and
one that sees every request: its id.

The gate answers a request that carries no credentials at all with a 401 before the body is read,
so a bad body without a token is a 401, never a 422 that tells a stranger about the schema. The
token itself is checked by api.auth.

The log writes one `request_log` row per /v1 request when its response has been sent (streams
included): token id (never the token), user, route, model, tokens, latency, status, and the
prompt and answer only with LOG_CHAT_TEXT=true. Routes add their part to `scope["state"]["log"]`.
The row is queued for the app's write-behind (api.store.writer), which writes rows in batches;
the table's SQL is in its home, workers.requestlog.

The request id is the caller's `X-Request-Id` when it is a short plain token, else a new one. It
is in every log line written while the request is served (core.logs), in the response's
`X-Request-Id` header, and in the headers of the Celery tasks the request queues.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import request_id_var

from .errors import error_response
from .store.writer import WriteBehind
from .textguard import clean_text

log = logging.getLogger(__name__)

PROTECTED = "/v1/"
SESSION_COOKIE = b"hearth_session="
REQUEST_ID_HEADER = "X-Request-Id"
_CALLER_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")  # nothing that could forge a log line


class StatusSeen:
    """A `send` that passes every message on and notes the response's status: what a middleware
    records once the app is done. 500 until a response starts (the app raised before one)."""

    def __init__(self, send: Send) -> None:
        self.send, self.status = send, 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self.send(message)


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        rid = given.decode() if _CALLER_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        token = request_id_var.set(rid)
        await self.app(scope, receive, stamped)
        # not in a `finally`: an unhandled error is logged by the outermost (server error)
        # middleware after this one, and that line should carry the id too
        request_id_var.reset(token)


class AuthGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(PROTECTED):
            headers = dict(scope.get("headers") or [])
            has_cookie = SESSION_COOKIE in headers.get(b"cookie", b"")
            proxied = b"x-forwarded-user" in headers  # api.auth checks the proxy is trusted
            if not headers.get(b"authorization") and not has_cookie and not proxied:
                response = error_response(
                    401,
                    "Missing bearer token: send 'Authorization: Bearer <token>'.",
                    code="missing_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestLog:
    def __init__(self, app: ASGIApp, keep_text: bool, writer: WriteBehind) -> None:
        self.app, self.keep_text, self.writer = app, keep_text, writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(PROTECTED):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        entry: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = entry
        seen = StatusSeen(send)
        try:
            await self.app(scope, receive, seen)
        finally:
            route = scope.get("route")
            # an unrouted path is the caller's: a NUL in it must not keep the row out of the log
            path = getattr(route, "path", None) or clean_text(scope.get("path", ""))
            self.writer.log(
                (
                    entry.get("token_id"),
                    entry.get("user_id"),
                    scope.get("method", ""),
                    path,
                    entry.get("model"),
                    seen.status,
                    (time.perf_counter() - started) * 1000,
                    entry.get("prompt_tokens"),
                    entry.get("completion_tokens"),
                    entry.get("prompt") if self.keep_text else None,
                    entry.get("answer") if self.keep_text else None,
                )
            )
