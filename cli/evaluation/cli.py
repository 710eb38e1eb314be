"""The command line of the evaluation: `hearth eval` and `python -m bench.retrieval`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.embedder import embedder_for
from core.offline import go_offline
from core.settings import Settings

from . import beir
from .runner import format_table, run_eval


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, help="a BEIR-format folder")
    p.add_argument("--split", default="test", help="which qrels/queries to use (default: test)")
    p.add_argument("--quick", action="store_true", help="a few hundred documents (CI smoke run)")
    p.add_argument("--limit-queries", type=int, default=None, metavar="N")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the report")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="embedding cache folder (default: $HEARTH_DATA_DIR/eval)",
    )
    p.add_argument(
        "--db-dir",
        type=Path,
        default=None,
        help="keep the evaluation database here and reuse it (default: a fresh temporary one)",
    )
    p.add_argument("--no-api", action="store_true", help="skip the /v1/search latency run")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Load the dataset, evaluate, print the table; 2 on a bad dataset folder."""
    go_offline()
    try:
        data = beir.load(args.dataset, args.split)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"hearth eval: cannot read {args.dataset}: {exc}", file=sys.stderr)
        return 2
    if args.quick:
        data = beir.subset(data, max_queries=args.limit_queries)
    elif args.limit_queries:
        data = beir.limit_queries(data, args.limit_queries)
    embedder = embedder_for(settings)
    cache_dir = args.cache_dir or settings.hearth_data_dir / "eval"
    backend = getattr(embedder, "backend", "torch")
    cache = cache_dir / f"embeddings-{Path(embedder.name).name}-{backend}.sqlite"
    print(f"{data.name}: {len(data.corpus)} documents, {len(data.queries)} queries", flush=True)
    report = run_eval(
        data,
        settings,
        embedder,
        cache_path=cache,
        db_dir=args.db_dir,
        with_api=not args.no_api,
        say=lambda line: print(line, flush=True),
    )
    print()
    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from core.settings import SettingsError, get_settings

    parser = argparse.ArgumentParser(
        prog="python -m bench.retrieval", description="retrieval quality on a BEIR dataset"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 2
    return run(args, settings)
