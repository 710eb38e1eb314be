"""The real stack, started the way a user starts it: `hearth up` on embedded defaults. The
session fixtures that share one stack among tests/e2e and tests/ui are in tests/conftest.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import HEARTH_ENV_VARS, free_port, run_hearth

REPO = Path(__file__).resolve().parents[2]
TOKEN_LINE = re.compile(r"Admin token .*: (hearth_\S+)")


def llm_model_dir() -> Path:
    """The converted SmolLM2 folder shared by test runs (`make test` prepares it)."""
    return Path(os.environ.get("HEARTH_TEST_LLM_DIR", REPO / ".cache" / "smollm2"))


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path
    api: str
    watch_dir: Path
    data_dir: Path
    token: str | None

    def hearth(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_hearth(self.env, *args, timeout_s=300)

    def status(self) -> dict:  # type: ignore[type-arg]
        out = self.hearth("status", "--json")
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def wait_for_file(
        self, name: str, statuses: tuple[str, ...] = ("indexed",), timeout_s: float = 300
    ) -> str:
        """Wait until the document whose path ends in `/name` has one of `statuses` (a file
        that has no row counts as 'missing'); fail loudly at the deadline with what was seen.
        Waits for the file itself, never for a count other modules' files could make up."""
        deadline = time.monotonic() + timeout_s
        seen = "missing"
        while True:
            rows = self.query(
                "SELECT status FROM documents WHERE right(path, length(%s)) = %s"
                " ORDER BY id DESC LIMIT 1",
                "/" + name,
                "/" + name,
            )
            seen = rows[0][0] if rows else "missing"
            if seen in statuses:
                return str(seen)
            if time.monotonic() > deadline:
                pytest.fail(f"{name} is {seen!r} after {timeout_s:.0f}s, not one of {statuses}")
            time.sleep(0.5)

    def query(self, sql: str, *args: object) -> list[tuple]:  # type: ignore[type-arg]
        """Read the stack's embedded database (attaching to the running server)."""
        import psycopg

        from core.embedded import EmbeddedPostgres

        pg = EmbeddedPostgres(self.data_dir / "postgres")
        try:
            with psycopg.connect(pg.start()) as conn:
                return conn.execute(sql, args).fetchall()
        finally:
            pg.stop()

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)


def llm_of(stack: Stack) -> dict[str, str]:
    """The environment that points another `hearth up` at `stack`'s vLLM (so it starts none):
    the suite starts the CPU vLLM under `hearth up` once, not once per stack a test needs."""
    return {
        "LLM_BASE_URL": f"http://127.0.0.1:{stack.env['LLM_LOCAL_PORT']}/v1",
        "LLM_MODEL": "smollm2",
    }


def start_stack(
    data_dir: Path,
    log: Path,
    timeout_s: float = 900,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Stack:
    """`hearth up` on `data_dir`, waited for until it says it is up. `extra_env` adds to (or
    overrides) its environment, e.g. `llm_of(stack)` to answer with a running stack's vLLM
    instead of starting another one."""
    env = {k: v for k, v in os.environ.items() if k not in HEARTH_ENV_VARS}
    port = port or free_port()
    env.update(
        {
            "HEARTH_DATA_DIR": str(data_dir),
            "HEARTH_WATCH_DIR": str(data_dir / "watched"),
            "HEARTH_PORT": str(port),
            "LLM_LOCAL_PORT": str(free_port()),
            "LLM_LOCAL_MODEL_DIR": str(llm_model_dir()),
            "WATCH_DEBOUNCE_S": "0.5",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            text = log.read_text(errors="replace")
            if "Hearth is up." in text.split("hearth: stopping")[-1]:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"hearth up did not come up (exit {proc.poll()}):\n{text[-6000:]}")
            time.sleep(0.2)
    except BaseException:  # a failed start or a Ctrl-C while waiting: leave nothing running
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    tokens = TOKEN_LINE.findall(text.split("hearth: stopping")[-1])
    return Stack(
        proc,
        env,
        log,
        f"http://127.0.0.1:{port}",
        data_dir / "watched",
        data_dir,
        tokens[-1] if tokens else None,
    )
