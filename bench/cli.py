"""The benchmark suite as one command: `hearth bench [ingest|search|rag|chat|all] [--scale N]
[--quick] [--json OUT]` (or `python -m bench.cli ...`).

  ingest  bench.ingest: pipeline chunks/s against bare embedding, per embedding backend
  search  bench.search_scale: /v1/search and search() against the bare HNSW query, recall@10
  rag     bench.rag_turn: request -> backend for a grounded turn, stage by stage
  chat    bench.gateway: Hearth's plain chat against the mock directly and LiteLLM

Each prints its table and writes a JSON file: OUT for one benchmark, OUT/<name>.json for `all`
(default .cache/bench/results/). `--scale` is the chunk count of search and rag (default 100,000;
rag reuses search's index). `--quick` is a smoke-sized run of everything (5,000 chunks, fewer
requests): minutes, for CI, where figures mean little.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .harness import REPO, say

BENCHES = ("ingest", "search", "rag", "chat")  # `all` runs them in this order
QUICK_SCALE = 5_000
RESULTS = REPO / ".cache" / "bench" / "results"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("which", nargs="?", default="all", choices=(*BENCHES, "all"))
    ap.add_argument("--scale", type=int, help="chunks for search and rag (default 100,000)")
    ap.add_argument("--quick", action="store_true", help="smoke-sized: minutes, not figures")
    ap.add_argument("--json", type=Path, help="a file (one benchmark) or a folder (all)")


def bench_argv(name: str, scale: int | None, quick: bool, out: Path) -> list[str]:
    """The command line of one benchmark module."""
    argv = ["--json", str(out)]
    if quick:
        scale = scale or QUICK_SCALE
        argv += {
            "ingest": ["--quick"],
            "search": ["--queries", "100", "--recall-queries", "30"],
            "rag": ["--questions", "30"],
            "chat": ["--requests", "40"],
        }[name]
    if scale and name in ("search", "rag"):
        argv += ["--scale", str(scale)]
    return argv


def _module(name: str) -> Callable[[Sequence[str]], int]:
    if name == "ingest":
        from . import ingest

        return ingest.main
    if name == "search":
        from . import search_scale

        return search_scale.main
    if name == "rag":
        from . import rag_turn

        return rag_turn.main
    from . import gateway

    return gateway.main


def run(
    which: str, *, scale: int | None = None, quick: bool = False, json: Path | None = None
) -> int:
    names = BENCHES if which == "all" else (which,)
    failed = []
    for name in names:
        out = (json or RESULTS) / f"{name}.json" if which == "all" or json is None else json
        out.parent.mkdir(parents=True, exist_ok=True)  # bench.ingest does not make it
        argv = bench_argv(name, scale, quick, out)
        say(f"=== {name}: {' '.join(argv)}")
        start = time.monotonic()
        try:
            code = _module(name)(argv)
        except Exception:
            traceback.print_exc()
            code = 1
        say(f"=== {name}: exit {code} after {time.monotonic() - start:.0f} s")
        if code:
            failed.append(name)
        print()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cli", description=__doc__.split("\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    return run(args.which, scale=args.scale, quick=args.quick, json=args.json)


if __name__ == "__main__":
    sys.exit(main())
