"""GET /openapi.json: the API's schema, served only with API_DOCS=true, and then only to a caller
who signs in (token, session or trusted proxy). There is no Swagger UI or ReDoc page: FastAPI's
load their code from a CDN, and a private service does not make browsers fetch code from one.
Load the schema into a local OpenAPI viewer instead (README "What a stranger can see")."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..auth import CurrentUser

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request, _: CurrentUser) -> JSONResponse:
    return JSONResponse(request.app.openapi())
