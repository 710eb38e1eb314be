"""`hearth bench ...`: runs the benchmark package (bench/, `python -m bench`) in this interpreter.

bench/ sits above cli/ (it drives `hearth up`'s parts), so the command line does not import it: it
hands the arguments over to `python -m bench`, whose parser is the one definition of them.
"""

from __future__ import annotations

import argparse
import os
import sys

from core.settings import Settings


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: ingestion, search at scale, RAG turn latency, gateway overhead, CPU LLM",
        description="Each benchmark prints medians, p95/p99 and ratios to its floor measured in"
        " the same run, and writes a JSON file. `hearth bench --help` lists the benchmarks.",
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of `python -m bench`")
    p.set_defaults(func=run_bench)


def bench_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    argv = bench_command(list(args.args))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # the benchmark is the process: its exit status and signals
