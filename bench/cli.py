"""The benchmark suite as one command: `hearth bench [ingest|search|rag|chat|llm|all]
[--scale N] [--quick] [--litellm] [--no-llm] [--data-dir DIR] [--json OUT]` (or
`python -m bench ...`).

  ingest  bench.ingest: pipeline chunks/s against bare embedding, per embedding backend
  search  bench.search_scale: /v1/search and search() against the bare HNSW query, recall@10
  rag     bench.rag_turn: request -> backend for a grounded turn, stage by stage
  chat    bench.gateway: Hearth's plain chat against the mock directly and LiteLLM
  llm     bench.e2e_llm: TTFT and tokens/s on the real CPU vLLM, through Hearth and directly
  answers bench.answers: cited-right-file, fact and refusal rates of grounded answers on the real
          CPU vLLM (not part of `all`: ~10 min per configuration; `--compare`: before and now)

Each prints its table and writes a JSON file: OUT for one benchmark, OUT/<name>.json for `all`
(default .cache/bench/results/). `--scale` is the chunk count of search and rag (default 100,000;
rag reuses search's index, kept in DATA_DIR/search-N, default .cache/bench). `--quick` is a
smoke-sized run of everything (2,000 chunks, a few requests, ONNX exports cached in
.cache/bench/onnx): minutes, for CI, where figures mean little.
`--litellm` installs LiteLLM's proxy into .cache/bench-litellm first if it is missing (from PyPI).
`all` runs llm only when the CPU vLLM is there, and says so when it is not; `--no-llm` skips it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from core.onnx_export import onnx_cache_dir

from .harness import EMBED_MODEL, ONNX_EXPORTS, REPO, say

BENCHES = ("ingest", "search", "rag", "chat", "llm")  # `all` runs them in this order
FULL_SCALE, QUICK_SCALE = 100_000, 2_000
RESULTS = REPO / ".cache" / "bench" / "results"
# --quick: export once, not on every run (the full run measures the export in a fresh folder)
ONNX_CACHE = onnx_cache_dir(ONNX_EXPORTS, EMBED_MODEL)
# smoke-sized: every code path of each benchmark once, in minutes (the CI test runs this)
QUICK = {
    "ingest": ["--quick", "--files", "5", "--rescan-files", "300", "--onnx-cache", str(ONNX_CACHE)],
    "search": ["--queries", "20", "--recall-queries", "10"],
    "rag": ["--questions", "6"],
    "chat": ["--concurrency", "1,8", "--requests", "10", "--tokens", "8", "--rate", "500"],
    "llm": ["--requests", "2", "--max-tokens", "8"],
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("which", nargs="?", default="all", choices=(*BENCHES, "all", "soak", "answers"))
    ap.add_argument("--scale", type=int, help="chunks for search and rag (default 100,000)")
    ap.add_argument("--quick", action="store_true", help="smoke-sized: minutes, not figures")
    ap.add_argument("--litellm", action="store_true", help="chat: install LiteLLM if missing")
    ap.add_argument("--no-llm", action="store_true", help="all: leave out the CPU LLM bench")
    ap.add_argument("--json", type=Path, help="a file (one benchmark) or a folder (all)")
    ap.add_argument("--data-dir", type=Path, help="search and rag datasets (default .cache/bench)")
    ap.add_argument("--minutes", type=float, default=20.0, help="soak: minutes of load")
    ap.add_argument("--compare", action="store_true", help="answers: old defaults and today's")
    ap.add_argument("--stream", action="store_true", help="answers: ask streamed")


def bench_argv(
    name: str,
    scale: int | None,
    quick: bool,
    out: Path,
    *,
    in_all: bool = False,
    data_dir: Path | None = None,
) -> list[str]:
    """The command line of one benchmark module."""
    argv = ["--json", str(out)]
    if quick:
        scale = scale or QUICK_SCALE
        argv += QUICK[name]
    if scale and name in ("search", "rag"):
        argv += ["--scale", str(scale)]
    if data_dir and name in ("search", "rag"):
        argv += ["--data-dir", str(data_dir / f"search-{scale or FULL_SCALE}")]
    if name == "llm" and in_all:
        argv.append("--if-available")  # said, not failed, when there is no CPU vLLM
    return argv


def _cpu_seconds() -> float:
    """CPU time of this process and the children it waited for (not the servers it started and
    stopped without waiting, such as PostgreSQL): on a shared machine, wall time says little."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
    if name == "llm":
        from . import e2e_llm

        return e2e_llm.main
    from . import gateway

    return gateway.main


def run(
    which: str,
    *,
    scale: int | None = None,
    quick: bool = False,
    json: Path | None = None,
    litellm: bool = False,
    no_llm: bool = False,
    data_dir: Path | None = None,
) -> int:
    names: tuple[str, ...] = BENCHES if which == "all" else (which,)
    if no_llm and which == "all":
        names = tuple(n for n in names if n != "llm")
        say("llm left out (--no-llm)")
    failed = []
    for name in names:
        out = (json or RESULTS) / f"{name}.json" if which == "all" or json is None else json
        out.parent.mkdir(parents=True, exist_ok=True)  # bench.ingest does not make it
        argv = bench_argv(name, scale, quick, out, in_all=which == "all", data_dir=data_dir)
        if name == "chat" and litellm:
            from .litellm_venv import ensure_litellm

            note = ensure_litellm()
            if note:
                say(note)
        say(f"=== {name}: {' '.join(argv)}")
        start, cpu = time.monotonic(), _cpu_seconds()
        try:
            code = _module(name)(argv)
        except ModuleNotFoundError as exc:  # one line on what to install, not a traceback
            from cli.main import missing_module

            say(f"{name}: {missing_module(exc)}")
            code = 1
        except Exception:
            traceback.print_exc()
            code = 1
        say(
            f"=== {name}: exit {code} after {time.monotonic() - start:.0f} s"
            f" (CPU {_cpu_seconds() - cpu:.0f} s, load average {os.getloadavg()[0]:.1f})"
        )
        if code:
            failed.append(name)
        print()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hearth bench", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return run_args(ap.parse_args(argv))


def run_args(args: argparse.Namespace) -> int:
    """`run` with the arguments `add_arguments` parsed; soak is never part of `all`."""
    if args.which == "soak":  # bench.soak: the real stack under mixed load for a long while
        from . import soak

        out = ["--json", str(args.json)] if args.json else []
        return soak.main(["--minutes", str(args.minutes), *out])
    if args.which == "answers":  # bench.answers: answer quality on the real CPU vLLM
        from . import answers

        out = ["--json", str(args.json or RESULTS / "answers.json")]
        flags = [f for f, on in (("--compare", args.compare), ("--stream", args.stream)) if on]
        return answers.main([*out, *flags, *(["--only", "6"] if args.quick else [])])
    return run(
        args.which,
        scale=args.scale,
        quick=args.quick,
        json=args.json,
        litellm=args.litellm,
        no_llm=args.no_llm,
        data_dir=args.data_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
