"""The passage page: where a citation leads a person in a browser (CITATION_LINK=ui). Its URL,
`/ui/passages/{chunk id}`, is a page of the built-in UI; it asks `/ui/passages/{id}/context`
for the passage in its document, signing in first (the session cookie) when it must. The file
itself downloads through /v1/files/{id}/content, which takes the same cookie.

The page is the same for every id, so it says nothing about any passage; the data answers as
search does: a passage of a collection the caller may not read is the same 404, byte for byte,
as one that does not exist.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from retrieval import context

from ..auth import CurrentUser
from ..errors import APIError
from ..state import State
from ..store import access
from ..ui import STATIC_DIR
from ..ui import passage as passage_view
from .ui import PAGE_HEADERS, _require_ui_header

router = APIRouter(include_in_schema=False)

_CHUNK_ID = re.compile(r"[0-9]{1,18}")


def _chunk_id(value: str) -> int:
    if not _CHUNK_ID.fullmatch(value) or int(value) > 2**63 - 1:
        raise APIError(404, f"No such passage: {value[:40]}", code="not_found")
    return int(value)


@router.api_route("/ui/passages/{chunk_id}", methods=["GET", "HEAD"], response_model=None)
async def page(chunk_id: str) -> FileResponse:
    _chunk_id(chunk_id)
    return FileResponse(
        STATIC_DIR / "passage.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


@router.get("/ui/passages/{chunk_id}/context")
async def passage_context(
    chunk_id: str, request: Request, state: State, user: CurrentUser, span: str | None = None
) -> dict[str, object]:
    """The passage, its neighbours and its document (display path, page, headings, download
    link); `span` (`start-end`, from the citation URL) marks a passage merged from neighbours."""
    _require_ui_header(request)
    wanted = _chunk_id(chunk_id)
    async with state.pool.connection() as conn:
        found = await context.around_chunk(conn, wanted, await access.readable(conn, user))
    if found is None:
        raise APIError(404, f"No such passage: {chunk_id}", code="not_found")
    return passage_view.view(state.settings, found, passage_view.parse_span(span))
