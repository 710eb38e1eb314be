"""Request body size limits, enforced while the body arrives (a client cannot stream past them by
leaving out Content-Length): MAX_REQUEST_MB for JSON, MAX_FILE_MB for uploads. Over the limit
is a 413 in OpenAI's error shape."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

UPLOAD_PATHS = ("/v1/files",)


class BodyTooLarge(HTTPException):
    """Raised to the route reading the body. An HTTPException, because FastAPI's body parsing
    lets those through (any other error there becomes a 400); the app's handler answers it."""

    code = "request_too_large"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int) -> None:
        self.app, self.max_bytes, self.upload_max_bytes = app, max_bytes, upload_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        upload = path.startswith(UPLOAD_PATHS)
        # a multipart upload carries its form fields and boundaries beside the file
        limit = self.upload_max_bytes + 64 * 1024 if upload else self.max_bytes
        shown = round((self.upload_max_bytes if upload else self.max_bytes) / 2**20, 3)
        message = f"The request body is larger than the {shown:g} MB this server accepts" + (
            " for an upload (MAX_FILE_MB)." if upload else " (MAX_REQUEST_MB)."
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(413, message, code="request_too_large")
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(413, message)
            return msg

        await self.app(scope, counted, send)
