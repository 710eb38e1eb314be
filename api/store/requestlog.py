"""Reading the request log (api.middleware.RequestLog writes it; a beat task prunes it)."""

from __future__ import annotations

from typing import Any

import psycopg

COLUMNS = (
    "id",
    "at",
    "token_id",
    "user",
    "method",
    "route",
    "model",
    "status",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "prompt",
    "answer",
)


def recent(conn: psycopg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT l.id, l.at, l.token_id, u.name, l.method, l.route, l.model, l.status,"
        " l.latency_ms, l.prompt_tokens, l.completion_tokens, l.prompt, l.answer"
        " FROM request_log l LEFT JOIN users u ON u.id = l.user_id ORDER BY l.id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    out = []
    for r in rows:
        row = dict(zip(COLUMNS, r, strict=True))
        row["at"] = row["at"].isoformat(timespec="seconds")
        row["latency_ms"] = round(float(row["latency_ms"]), 1)
        out.append(row)
    return out
