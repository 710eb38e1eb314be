"""The whole stack for a benchmark, started the way a user starts it: `hearth up` on embedded
defaults (PostgreSQL, Redis, the CPU vLLM) in a data dir of the benchmark's own. The same recipe
as tests/e2e/stack.py, without pytest: bench/ does not import tests/."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .harness import REPO, Child, child_env, free_port, say

TOKEN_LINE = re.compile(r"Admin token .*: (hearth_\S+)")


def llm_model_dir() -> Path:
    """The converted SmolLM2 folder: LLM_LOCAL_MODEL_DIR, HEARTH_TEST_LLM_DIR or .cache/smollm2."""
    for var in ("LLM_LOCAL_MODEL_DIR", "HEARTH_TEST_LLM_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return REPO / ".cache" / "smollm2"


@dataclass
class UpStack:
    child: Child  # `hearth up`; it supervises api, workers, beat, watcher, vLLM and Redis
    api: str
    token: str
    data_dir: Path

    @property
    def watch_dir(self) -> Path:
        return self.data_dir / "watched"

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "postgres"

    def stop(self, timeout_s: float = 120.0) -> int | None:
        """SIGTERM to `hearth up` alone, which stops its children in order; a kill only if it
        hangs (its children have sessions of their own, so a group kill would orphan them)."""
        proc = self.child.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode


def start_up(
    data_dir: Path, extra_env: dict[str, str] | None = None, timeout_s: float = 900
) -> UpStack:
    """`hearth up` with its own data dir, ports and the shared converted model; returns once the
    banner says it is up (its output goes to data_dir/../hearth-up.log)."""
    port = free_port()
    env = child_env(
        HEARTH_DATA_DIR=str(data_dir),
        HEARTH_WATCH_DIR=str(data_dir / "watched"),
        HEARTH_PORT=str(port),
        LLM_LOCAL_PORT=str(free_port()),
        LLM_LOCAL_MODEL_DIR=str(llm_model_dir()),
        WATCH_DEBOUNCE_S="0.5",
        PYTHONUNBUFFERED="1",
        **(extra_env or {}),
    )
    log = data_dir.parent / "hearth-up.log"
    say(f"starting hearth up in {data_dir} (log {log})")
    child = Child("hearth up", [sys.executable, "-m", "cli.main", "up"], env, log)
    stack = UpStack(child, f"http://127.0.0.1:{port}", "", data_dir)
    deadline = time.monotonic() + timeout_s
    while "Hearth is up." not in (text := child.tail(1_000_000)):
        if child.proc.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            raise RuntimeError(f"hearth up did not come up (exit {child.proc.poll()}):\n{text}")
        time.sleep(0.5)
    tokens = TOKEN_LINE.findall(text)
    if not tokens:
        stack.stop()
        raise RuntimeError("hearth up printed no admin token (was the data dir fresh?)")
    stack.token = tokens[-1]
    return stack


@contextlib.contextmanager
def running(data_dir: Path, **extra_env: str) -> Iterator[UpStack]:
    stack = start_up(data_dir, extra_env)
    try:
        yield stack
    finally:
        say(f"stopping hearth up: exit {stack.stop()}")
