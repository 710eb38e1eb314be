"""The home of the `request_log` table: one row per /v1 request, written by the API after its
response has been sent (api.middleware.RequestLog; in batches, api.store.writer), read by
`GET /v1/admin/logs` and `hearth logs`, and pruned by the beat (workers.tasks.prune_request_log,
REQUEST_LOG_DAYS). It lives in `workers/`, the lowest room that touches it, so the API and the
CLI import it downward."""

from __future__ import annotations

from typing import Any

import psycopg

# what the API writes, in this order (api.middleware.RequestLog builds the tuple)
WRITTEN = (
    "token_id",
    "user_id",
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
_INSERT = (
    f"INSERT INTO request_log ({', '.join(WRITTEN)}) VALUES ({', '.join(['%s'] * len(WRITTEN))})"
)

COLUMNS = ("id", "at", "token_id", "user", *WRITTEN[2:])  # what `recent` returns


async def write(conn: psycopg.AsyncConnection, row: tuple[Any, ...]) -> None:
    """One request's row: the values of WRITTEN, in order."""
    await conn.execute(_INSERT, row)


_TYPES = ("bigint", "bigint", "text", "text", "text", "int", "real", "int", "int", "text", "text")


def rows_cte(rows: list[tuple[Any, ...]]) -> tuple[str, dict[str, Any]]:
    """Writing requests' rows (each the values of WRITTEN, in order) as the CTE of a statement
    and its parameters (api.store.writer joins it with other tables' writes)."""
    columns = list(zip(*rows, strict=True))
    params = {f"log_{name}": list(values) for name, values in zip(WRITTEN, columns, strict=True)}
    arrays = ", ".join(f"%(log_{n})s::{t}[]" for n, t in zip(WRITTEN, _TYPES, strict=True))
    cte = (
        f"logged AS (INSERT INTO request_log ({', '.join(WRITTEN)}) SELECT * FROM unnest({arrays}))"
    )
    return cte, params


def recent(conn: psycopg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The latest `limit` requests, newest first, with the user's name."""
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


def prune(conn: psycopg.Connection, days: int) -> int:
    """Delete the rows older than `days` days; how many went."""
    cur = conn.execute(
        "DELETE FROM request_log WHERE at < now() - make_interval(days => %s)", (days,)
    )
    return cur.rowcount
