"""`hearth bench`: the benchmark suite of a source checkout (bench/, next to api/).

The suite is imported only when the command runs: it is not part of the installed package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.settings import Settings

CHOICES = ("ingest", "search", "rag", "chat", "llm", "all", "soak")  # soak: not part of all
CHECKOUT = Path(__file__).resolve().parents[2]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: ingestion, search at scale, RAG turn latency, gateway overhead, CPU LLM",
        description="Each benchmark prints medians, p95/p99 and ratios to its floor measured in"
        " the same run, and writes a JSON file.",
    )
    p.add_argument(
        "which",
        nargs="?",
        default="all",
        choices=CHOICES,
        help="ingest, search, rag, chat (the gateway), llm (the real CPU vLLM), or all (default)",
    )
    p.add_argument("--scale", type=int, help="chunks for search and rag (default 100,000)")
    p.add_argument("--quick", action="store_true", help="smoke-sized run (minutes, for CI)")
    p.add_argument("--minutes", type=float, default=20.0, help="soak: minutes of load")
    p.add_argument(
        "--litellm",
        action="store_true",
        help="chat: install LiteLLM's proxy into .cache/bench-litellm (PyPI) if it is missing",
    )
    p.add_argument(
        "--no-llm", action="store_true", help="all: leave out the CPU LLM benchmark (llm)"
    )
    p.add_argument(
        "--json",
        type=Path,
        help="results file (one benchmark) or folder (all); default .cache/bench/results/",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="where search and rag keep their dataset (DIR/search-N; default .cache/bench)",
    )
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    if not (CHECKOUT / "bench" / "cli.py").is_file():
        print("hearth bench: needs a source checkout (bench/ beside api/)", file=sys.stderr)
        return 2
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    if args.which == "soak":  # bench.soak: the real stack under mixed load for a long while
        from bench import soak

        out = ["--json", str(args.json)] if args.json else []
        return soak.main(["--minutes", str(args.minutes), *out])
    from bench import cli

    return cli.run_args(args)
