"""Text that PostgreSQL or a tokenizer cannot take is refused at the edge, for every route at once.

PostgreSQL text cannot hold a NUL (U+0000), and a lone UTF-16 surrogate (U+D800-U+DFFF outside
a pair, which JSON's `\\ud800` escape can smuggle into a string) cannot be encoded as UTF-8 for
PostgreSQL or a tokenizer. Either, deep in a route, was a 500 — after the backend had answered,
for a chat turn. `TextGuard` checks what every route reads: the query string, the headers, and
each JSON body as the route reads it, and `path_params` (an app-wide dependency) the path; both
answer a 400 that names the parameter.

A body is scanned for the escapes (and raw bytes) that could decode to such characters; only a
body with a suspect is parsed, on a thread, to find the field, so a valid request pays one
regex pass. `clean_text` makes what comes from elsewhere (the model's answer) safe to store.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, error_response

CODE = "invalid_characters"
# what could decode to a NUL or a surrogate: in JSON text, a \u0000 escape or any surrogate
# escape; UTF-8 bytes of a surrogate (json.loads reads them: surrogatepass). Two patterns, each
# with a literal start that the regex engine scans for fast (one alternation of both took 2 s
# on a 10 MB body). A pair (an emoji) or an escaped backslash before `u` makes a false suspect,
# which the parse clears.
_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_RAW_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")
_OVERLAP = 6  # a suspect split across two body chunks is still seen
_BAD = re.compile("[\x00\ud800-\udfff]")  # in a decoded str, any surrogate is a lone one


def is_bad(text: str) -> bool:
    return _BAD.search(text) is not None


def clean_text(text: str, replacement: str = "\ufffd") -> str:
    """`text` with NUL characters and lone surrogates replaced, so it can be stored."""
    return _BAD.sub(replacement, text)


def message(param: str) -> str:
    return (
        f"{param} contains a NUL character or a lone UTF-16 surrogate, which Hearth cannot"
        " store or tokenize; remove it."
    )


class BadText(HTTPException):
    """Raised to the route reading the body (like api.limits.BodyTooLarge: FastAPI's body
    parsing lets HTTPExceptions through); the app's handler answers it with `param`."""

    code = CODE

    def __init__(self, param: str) -> None:
        super().__init__(400, message(param))
        self.param = param


def bad_field(value: Any) -> str | None:
    """The dotted path of the first string (or object key) in parsed JSON `value` that holds a
    NUL or a lone surrogate ("body" for the top level); None when there is none. Iterative:
    a deeply nested body cannot exhaust the stack."""
    # a path is a chain of (parent, key) links, spelled out only for the field that is found
    stack: list[tuple[_Link, Any]] = [(None, value)]
    while stack:
        link, item = stack.pop()
        if isinstance(item, str):
            if is_bad(item):
                return _spell(link)
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if is_bad(key):
                    return _spell(link)
                stack.append(((link, key), child))
        elif isinstance(item, list):
            stack.extend(((link, str(i)), child) for i, child in reversed(list(enumerate(item))))
    return None


_Link = tuple[Any, str] | None  # (parent link, key)


def _spell(link: _Link) -> str:
    keys: list[str] = []
    while link is not None:
        link, key = link
        keys.append(key)
    return ".".join(reversed(keys)) or "body"


def bad_json_field(body: bytes) -> str | None:
    try:
        return bad_field(json.loads(body))
    except (ValueError, RecursionError):
        return None  # not JSON: the route's own parsing answers that


def _json_body(scope: Scope) -> bool:
    """Whether the route may read the body as JSON (FastAPI does for a JSON type or none)."""
    ctype = dict(scope.get("headers") or []).get(b"content-type", b"").split(b";")[0].strip()
    return not ctype or ctype == b"application/json" or ctype.endswith(b"+json")


async def path_params(request: Request) -> None:
    """An app-wide dependency: a path parameter holding a NUL is a 400 naming it. (Routing
    names the parameters, so this runs after it, where TextGuard cannot.)"""
    for name, value in request.path_params.items():
        if "\x00" in str(value):
            raise APIError(400, message(name), param=name, code=CODE)


def bad_in_query_or_headers(scope: Scope) -> str | None:
    """The query parameter or header holding a NUL, or None. A query is decoded as UTF-8 with
    replacement and headers as Latin-1, so a NUL is all that can reach a route this way."""
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in key:
            return "query"
        if "\x00" in value:
            return key
    for name, value in scope.get("headers") or []:
        if b"\x00" in name:
            return "headers"
        if b"\x00" in value:
            return str(name.decode("latin-1"))
    return None


class TextGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        param = bad_in_query_or_headers(scope)
        if param is not None:
            response = error_response(400, message(param), param=param, code=CODE)
            await response(scope, receive, send)
            return
        if _json_body(scope):
            receive = _checked(receive)
        await self.app(scope, receive, send)


def _suspect(data: bytes) -> bool:
    return _ESCAPE.search(data) is not None or _RAW_SURROGATE.search(data) is not None


def _checked(receive: Receive) -> Receive:
    """`receive`, scanning the body as it arrives; at its end, a suspect body is parsed and a
    bad one raises BadText to the route reading it."""
    chunks: list[bytes] = []
    tail = b""
    suspect = False

    async def checked() -> Message:
        nonlocal tail, suspect
        msg = await receive()
        if msg["type"] != "http.request":
            return msg
        chunk = msg.get("body", b"")
        chunks.append(chunk)  # the route holds these bytes too: no copy until a suspect
        if not suspect:
            seam = tail + chunk[:_OVERLAP]
            suspect = _suspect(seam) or _suspect(chunk)
            tail = seam[-_OVERLAP:] if len(chunk) < _OVERLAP else chunk[-_OVERLAP:]
        if not msg.get("more_body", False):
            body, suspected = b"".join(chunks) if suspect else b"", suspect
            chunks.clear()
            if suspected and (param := await asyncio.to_thread(bad_json_field, body)):
                raise BadText(param)
        return msg

    return checked
