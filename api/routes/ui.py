"""The built-in chat UI: the page at `/`, its static files, the browser session (a token exchanged
for an httpOnly cookie) and the two things the documents view needs beyond /v1/files.

Everything else the page does goes through the public API (/v1/chat/completions, /v1/files,
/v1/conversations, /v1/models), which accepts the session cookie as well as a bearer token.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from retrieval import documents as index_documents

from ..auth import CurrentUser
from ..errors import APIError
from ..state import State
from ..store import access, sessions
from ..store.accounts import User, authenticate
from ..ui import CSRF_HEADER, SESSION_COOKIE, STATIC_DIR
from ..ui import documents as ui_documents

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

# the page runs only its own scripts and styles and talks only to its own origin, so even markup
# that slipped past the sanitiser could neither run nor send anything anywhere
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}


class SignIn(BaseModel):
    token: str = Field(max_length=512)


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "role": user.role}


def _require_ui_header(request: Request) -> None:
    if not request.headers.get(CSRF_HEADER):
        raise APIError(
            403,
            f"Send the header '{CSRF_HEADER}: 1' with this request.",
            code="csrf_header_missing",
        )


def _cookie_args(request: Request) -> dict[str, Any]:
    return {
        "path": "/",
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
    }


@router.api_route("/", methods=["GET", "HEAD"], response_model=None)
async def index() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


@router.get("/ui/static/{name:path}", response_model=None)
async def static_file(name: str) -> FileResponse:
    path = (STATIC_DIR / name).resolve()
    kind = _STATIC_TYPES.get(path.suffix)
    if kind is None or not path.is_relative_to(STATIC_DIR) or not path.is_file():
        raise APIError(404, f"No such file: /ui/static/{name}", code="not_found")
    return FileResponse(
        path,
        media_type=kind,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


@router.post("/ui/session")
async def sign_in(body: SignIn, request: Request, response: Response, state: State) -> Any:
    """Exchange a token for a session cookie; the token itself is not kept by the browser."""
    _require_ui_header(request)
    token = body.token.strip()
    async with state.pool.connection() as conn:
        user = await authenticate(conn, token) if token else None
        opened = await sessions.create_session(conn, token) if user else None
        if opened is not None and (old := request.cookies.get(SESSION_COOKIE)):
            await sessions.end_session(conn, old)
    if user is None or opened is None:
        raise APIError(401, "Invalid, expired or revoked token.", code="invalid_api_key")
    session_id, expires_at = opened
    max_age = max(0, int((expires_at - datetime.now(UTC)).total_seconds()))
    response.set_cookie(SESSION_COOKIE, session_id, max_age=max_age, **_cookie_args(request))
    return {"user": _user_json(user), "expires_at": int(expires_at.timestamp())}


@router.delete("/ui/session")
async def sign_out(request: Request, response: Response, state: State) -> dict[str, Any]:
    _require_ui_header(request)
    if session_id := request.cookies.get(SESSION_COOKIE):
        async with state.pool.connection() as conn:
            await sessions.end_session(conn, session_id)
    response.delete_cookie(SESSION_COOKIE, **_cookie_args(request))
    return {"signed_out": True}


@router.get("/ui/me")
async def me(user: CurrentUser) -> dict[str, Any]:
    return _user_json(user)


@router.get("/ui/documents")
async def documents(state: State, user: CurrentUser) -> dict[str, Any]:
    """The documents the user may read, with status, chunk count and when last indexed."""
    async with state.pool.connection() as conn:
        docs = await index_documents.list_documents(
            conn, readable=await access.readable(conn, user), limit=1000
        )
    return {"object": "list", "data": [ui_documents.view(d) for d in docs]}


@router.post("/ui/documents/{doc_id}/reindex")
async def reindex(doc_id: int, state: State, user: CurrentUser) -> dict[str, Any]:
    """Parse and embed a document again, even if its file has not changed. Like deleting it,
    this is for those who may write to its collection."""
    if state.celery is None:
        raise APIError(503, "Re-indexing needs the ingestion queue; REDIS_URL is not set.")
    async with state.pool.connection() as conn:
        found = await index_documents.get_document(conn, doc_id, await access.readable(conn, user))
        if found is None:
            raise APIError(404, f"No such File object: file-{doc_id}", code="not_found")
        status, collection = found.status, found.collection
        if not await access.may_write(conn, user, collection):
            raise APIError(
                403,
                f"You may read but not re-index files of the collection '{collection}'.",
                code="collection_forbidden",
            )
        queued = None
        if status not in index_documents.BUSY_STATUSES:
            queued = await index_documents.mark_for_reindex(conn, doc_id)
    if queued is None:
        raise APIError(409, f"file-{doc_id} is already being indexed.", code="busy")
    try:
        await state.queue_ingest(
            queued.path, queued.collection, queued.source, generation=queued.generation
        )
    except Exception:
        log.exception("could not queue the re-index of %s", queued.path)
        async with state.pool.connection() as conn:
            await index_documents.restore_status(conn, doc_id, queued.previous_status)
        raise APIError(503, "The ingestion queue is unreachable; try again later.") from None
    return {"id": f"file-{doc_id}", "status": "queued", "filename": Path(queued.path).name}
