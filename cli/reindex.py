"""`hearth reindex --embed-model M`: change the embedding model while search keeps serving
(retrieval.reembed does the work; this is its progress output)."""

from __future__ import annotations

import argparse
import sys
import time

import psycopg

from core.db import connect
from core.embedded import command_database_url
from core.embedder import BACKENDS, embedder_for
from core.offline import go_offline
from core.settings import Settings
from retrieval import reembed


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reindex",
        help="re-embed every chunk with another embedding model, serving search meanwhile",
    )
    p.add_argument("--embed-model", help="the new model: a local folder or a package shipping one")
    p.add_argument("--backend", choices=BACKENDS, help="runtime for the new model (EMBED_BACKEND)")
    p.add_argument("--batch", type=int, default=64, help="chunks embedded per transaction")
    p.add_argument(
        "--abort", action="store_true", help="drop an unfinished reindex (its new vectors)"
    )
    p.set_defaults(func=run_reindex)


def run_reindex(args: argparse.Namespace, settings: Settings) -> int:
    if args.abort == bool(args.embed_model):
        print("hearth reindex: give --embed-model M, or --abort", file=sys.stderr)
        return 2
    if args.batch < 1:
        print("hearth reindex: --batch must be at least 1", file=sys.stderr)
        return 2
    go_offline()
    with connect(command_database_url(settings), autocommit=True) as conn:
        if args.abort:
            dropped = reembed.abort(conn)
            print("dropped the unfinished reindex" if dropped else "no reindex in progress")
            return 0
        return _reindex(conn, args, settings)


def _reindex(conn: psycopg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    if reembed.index_meta(conn).get("embed_model") == args.embed_model:
        print(f"the index already uses {args.embed_model}; nothing to do")
        return 0
    if args.backend:
        settings = settings.model_copy(update={"embed_backend": args.backend})
    try:
        embedder = embedder_for(settings, args.embed_model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"hearth reindex: {exc}", file=sys.stderr)
        return 2
    shown = [0.0]

    def show(stage: str, p: reembed.Progress) -> None:
        now = time.monotonic()
        if stage == "embed" and now - shown[0] < 1.0 and p.missing:
            return
        shown[0] = now
        lines = {
            "start": f"reindexing {p.total} chunks with {p.model} (dim {p.dim});"
            f" {p.done} already done",
            "embed": f"embedded {p.done}/{p.total} chunks",
            "index": f"building the HNSW index of the new vectors ({p.total} chunks)",
            "switch": "switching the index to the new vectors",
            "switched": f"switched: the index now uses {p.model} (dim {p.dim})",
        }
        print(lines[stage], flush=True)

    try:
        reembed.run(conn, embedder, batch=args.batch, on_progress=show)
    except reembed.ReindexError as exc:
        print(f"hearth reindex: {exc}", file=sys.stderr)
        return 2
    backend = f" EMBED_BACKEND={settings.embed_backend}" if args.backend else ""
    print(
        "the running API and workers now embed with it; set "
        f"EMBED_MODEL={args.embed_model}{backend} in the environment before the next start"
    )
    return 0
