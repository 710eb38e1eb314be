"""`hearth search` (the /v1/search code path) and `hearth eval` (cli.evaluation)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from core.embedded import command_database_url
from core.embedder import embedder_for
from core.offline import go_offline
from core.settings import Settings

from .evaluation import cli as evaluation


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search the index, as the chat API and /v1/search do")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=None, help="passages (default: TOP_K)")
    p.add_argument("--mode", choices=("hybrid", "lexical", "dense"), default="hybrid")
    p.add_argument("--collection", action="append", help="only this collection (repeatable)")
    p.add_argument("--path-prefix", action="append", help="only paths under this (repeatable)")
    p.add_argument("--type", action="append", help="MIME type or suffix, e.g. pdf (repeatable)")
    p.add_argument("--after", help="modified at or after this date (ISO 8601)")
    p.add_argument("--before", help="modified before this date (ISO 8601)")
    p.add_argument("--meta", action="append", help="metadata KEY=VALUE to match (repeatable)")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--json", action="store_true", help="the /v1/search response body")
    p.set_defaults(func=run_search)

    p = sub.add_parser("eval", help="retrieval quality on a BEIR dataset (nDCG, recall, MRR)")
    evaluation.add_arguments(p)
    p.set_defaults(func=evaluation.run)


def run_search(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from api.errors import APIError
    from api.search import SearchFilters, SearchRequest, passage_json
    from api.search import run_search as search
    from core.db import async_pool

    go_offline()
    try:
        filters = SearchFilters(
            collections=args.collection,
            path_prefix=args.path_prefix,
            file_types=args.type,
            modified_after=args.after,
            modified_before=args.before,
            metadata=dict(m.split("=", 1) for m in args.meta or ()) or None,
        )
        req = SearchRequest(
            query=args.query, k=args.k, filters=filters, mode=args.mode, rerank=args.rerank
        )
    except (ValidationError, ValueError) as exc:
        print(f"hearth search: {exc}", file=sys.stderr)
        return 2
    embedder = embedder_for(settings)

    async def go() -> list:
        pool = async_pool(command_database_url(settings), min_size=1, max_size=1)
        await pool.open()
        try:
            return await search(pool, embedder, settings, req)
        finally:
            await pool.close()

    try:
        passages = asyncio.run(go())
    except APIError as exc:
        print(f"hearth search: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps({"data": [passage_json(i, p) for i, p in enumerate(passages, 1)]}))
        return 0
    for i, p in enumerate(passages, 1):
        where = f"{p.path}" + (f" p.{p.page}" if p.page else "")
        heading = " > ".join(p.heading_path)
        print(f"[{i}] {p.score:.4f} {where}" + (f" ({heading})" if heading else ""))
        print(f"    {p.text[:200].strip()}")
    return 0
