"""`hearth ls`: the documents in the index, with their status and why they failed."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import psycopg

from core.embedded import database_url
from core.settings import Settings
from retrieval.documents import LIVE_STATUSES, PROBLEM_STATUSES, DocumentInfo, list_documents


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list documents: status, chunks, last update, path")
    p.add_argument("--failed", action="store_true", help="only documents that failed or need OCR")
    p.add_argument("--collection", help="only this collection")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_ls)


async def _fetch(url: str, collection: str | None, failed: bool) -> list[DocumentInfo]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await list_documents(
            conn,
            collection=collection,
            statuses=PROBLEM_STATUSES if failed else LIVE_STATUSES,
            limit=None,
            descending=False,
        )


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    url, handle = database_url(settings)
    try:
        docs = asyncio.run(_fetch(url, args.collection, args.failed))
    finally:
        if handle is not None:
            handle.stop()
    docs.sort(key=lambda d: (d.collection, d.path))
    if args.json:
        json.dump([_as_dict(d) for d in docs], sys.stdout, indent=1)
        print()
        return 0
    if not docs:
        print("no documents" + (" with problems" if args.failed else ""))
        return 0
    print(f"{'STATUS':<10} {'CHUNKS':>6}  {'UPDATED':<16}  PATH")
    for d in docs:
        updated = d.updated_at.astimezone().strftime("%Y-%m-%d %H:%M")
        print(f"{d.status:<10} {d.chunk_count:>6}  {updated:<16}  {d.path}")
        if d.status in PROBLEM_STATUSES and d.error:
            print(f"{'':<10} {'':>6}  {'':<16}  ! {d.error}")
    return 0


def _as_dict(d: DocumentInfo) -> dict[str, object]:
    return {
        "id": f"file-{d.id}",
        "path": d.path,
        "collection": d.collection,
        "source": d.source,
        "status": d.status,
        "chunks": d.chunk_count,
        "bytes": d.size,
        "updated_at": d.updated_at.isoformat(),
        "error": d.error if d.status in PROBLEM_STATUSES else None,
    }
