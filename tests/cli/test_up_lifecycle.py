"""`hearth up` as a service people start once and forget: closing its terminal (SIGHUP), a
`kill -9` of the supervisor, a second `hearth up` on the same data dir, and starting again after
a crash. Each runs a real `hearth up` (embedded Postgres and Redis, the API, two workers, beat and
the watcher) in a temp data dir.

The LLM is tests/mock_llm.py's scripted backend through LLM_BASE_URL, not the CPU vLLM: these
tests are about processes, and a minute of vLLM start-up per test would buy nothing here. The
vLLM child gets the same parent-death signal, lifeline marker and sweep as every other child.

"A process of the data dir" is found the way an operator would look: any live process whose
command line or environment names the data dir (/proc). Deadlines are waited on, never slept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import HEARTH_ENV_VARS, free_port
from tests.mock_llm import MockLLM, serve

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 10.0  # issue 18: no process of the data dir 10 s after the supervisor is gone
UP_WITHIN_S = 300.0


# finding the processes of a data dir ---------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _names(blob: bytes, needle: bytes) -> bool:
    """Whether `needle` (a path) occurs in a NUL-separated blob as the path or a parent of one."""
    start = blob.find(needle)
    while start >= 0:
        end = start + len(needle)
        if end == len(blob) or blob[end : end + 1] in (b"\0", b"/", b" "):
            return True
        start = blob.find(needle, start + 1)
    return False


def data_dir_processes(data_dir: Path) -> dict[tuple[int, int], str]:
    """Live (not zombie) processes naming `data_dir` in their command line or environment,
    keyed by (pid, start time) so a reused pid is never mistaken for an old process."""
    needle = str(data_dir).encode()
    me = os.getpid()
    found: dict[tuple[int, int], str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        stat = _read(f"/proc/{entry}/stat").decode(errors="replace")
        if not stat:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if not fields or fields[0] in ("Z", "X"):
            continue
        cmdline = _read(f"/proc/{entry}/cmdline")
        if _names(cmdline, needle) or _names(_read(f"/proc/{entry}/environ"), needle):
            comm = stat[stat.find("(") + 1 : stat.rfind(")")]
            text = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()[:160]
            found[(int(entry), int(fields[19]))] = f"{entry} {comm}: {text}"
    return found


def kill_all(data_dir: Path) -> None:
    """Teardown: nothing of this test's data dir outlives it, whatever the code under test did."""
    for _ in range(3):
        procs = data_dir_processes(data_dir)
        if not procs:
            return
        for pid, _start in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while data_dir_processes(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)


def wait_gone(
    data_dir: Path, timeout_s: float, only: set[tuple[int, int]] | None = None
) -> list[str]:
    """Poll until no process of `data_dir` (or of `only`) is left; what is left at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = data_dir_processes(data_dir)
        if only is not None:
            left = {k: v for k, v in left.items() if k in only}
        if not left or time.monotonic() > deadline:
            return sorted(left.values())
        time.sleep(0.1)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_port_free(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# a real `hearth up` --------------------------------------------------------------------------


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path
    port: int
    data_dir: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self, timeout_s: float = UP_WITHIN_S) -> None:
        deadline = time.monotonic() + timeout_s
        while "Hearth is up." not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"hearth up did not come up (exit {self.proc.poll()}):\n{self.output()[-6000:]}"
                )
            time.sleep(0.2)

    def ready(self) -> int:
        return httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=10).status_code

    def reaper(self) -> list[int]:
        """The supervisor's watchdog process(es), if it has one."""
        return [
            pid
            for (pid, _), text in data_dir_processes(self.data_dir).items()
            if "cli.reaper" in text
        ]


def up_env(data_dir: Path, llm_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HEARTH_ENV_VARS}
    env.update(
        {
            "HEARTH_DATA_DIR": str(data_dir),
            "HEARTH_WATCH_DIR": str(data_dir / "watched"),
            "HEARTH_PORT": str(port),
            "LLM_BASE_URL": llm_url,
            "LLM_MODEL": "mock",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


STARTED: list[subprocess.Popen[bytes]] = []  # reaped at teardown, whatever a test did


def start_up(data_dir: Path, llm_url: str, log: Path, port: int | None = None) -> Up:
    port = port or free_port()
    env = up_env(data_dir, llm_url, port)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    STARTED.append(proc)
    up = Up(proc, env, log, port, data_dir)
    up.wait_up()
    return up


@pytest.fixture
def llm() -> Iterator[MockLLM]:
    with serve(MockLLM()) as mock:
        yield mock


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "data"
    yield d
    kill_all(d)
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def _comms(procs: dict[tuple[int, int], str]) -> set[str]:
    return {text.split(":", 1)[0].split(" ", 1)[1] for text in procs.values()}


def assert_whole_stack(data_dir: Path) -> dict[tuple[int, int], str]:
    """The scan sees the running stack (so an empty scan later means something)."""
    procs = data_dir_processes(data_dir)
    comms = _comms(procs)
    assert "postgres" in comms and "redis-server" in comms, sorted(procs.values())
    assert len(procs) >= 7, sorted(procs.values())  # + api, 2 workers, beat, watcher, pg's own
    return procs


# the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "kill-9"])
def test_nothing_outlives_the_supervisor(
    sig: signal.Signals, llm: MockLLM, data_dir: Path, tmp_path: Path
) -> None:
    """Closing the terminal (SIGHUP) or `kill -9` of `hearth up`: within 10 s no process of the
    data dir is left (Postgres, Redis, API, workers and their pool, beat, watcher) and the API
    port is free."""
    up = start_up(data_dir, llm.url, tmp_path / "up.log")
    assert up.ready() == 200
    assert_whole_stack(data_dir)

    up.proc.send_signal(sig)
    left = wait_gone(data_dir, GONE_WITHIN_S)
    assert not left, (
        f"{len(left)} process(es) of the data dir still running {GONE_WITHIN_S:.0f} s after "
        f"{sig.name}:\n" + "\n".join(left) + f"\n--- hearth up said:\n{up.output()[-3000:]}"
    )
    assert wait_port_free(up.port, 5), f"port {up.port} still taken after {sig.name}"
    code = up.proc.wait(30)
    if sig == signal.SIGHUP:  # a clean stop, which says so
        assert code == 0, up.output()[-3000:]
        assert "hearth: stopping" in up.output()


def test_a_second_up_on_the_same_data_dir_refuses(
    llm: MockLLM, data_dir: Path, tmp_path: Path
) -> None:
    """It exits at once, non-zero, with one line naming the running pid and port; the running
    one is untouched."""
    up = start_up(data_dir, llm.url, tmp_path / "up.log")
    before = data_dir_processes(data_dir)

    second = subprocess.run(
        [sys.executable, "-m", "cli.main", "up"],
        env=up.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = (second.stdout + second.stderr).strip()
    assert second.returncode not in (0, None), out
    assert "Traceback" not in out, out
    assert len(out.splitlines()) == 1, out
    assert f"pid {up.proc.pid}" in out and str(up.port) in out, out

    assert up.ready() == 200
    after = data_dir_processes(data_dir)
    assert set(before) <= set(after), sorted(set(before) - set(after))  # nothing of it killed
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(60) == 0
    assert not wait_gone(data_dir, GONE_WITHIN_S)


@pytest.mark.parametrize("with_reaper", [False, True], ids=["supervisor", "supervisor+watchdog"])
def test_up_after_a_kill_9_comes_up_clean(
    with_reaper: bool, llm: MockLLM, data_dir: Path, tmp_path: Path
) -> None:
    """`hearth up` right after a `kill -9` of the last one (and, the worst case, of its
    watchdog too, so nothing cleaned up after it) stops what the dead one left and starts: no
    process of the old run survives, and the new API answers."""
    up = start_up(data_dir, llm.url, tmp_path / "up.log")
    old = assert_whole_stack(data_dir)
    victims = [up.proc.pid, *(up.reaper() if with_reaper else [])]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    up.proc.wait(30)

    again = start_up(data_dir, llm.url, tmp_path / "again.log", port=up.port)
    left = wait_gone(data_dir, GONE_WITHIN_S, only=set(old))
    assert not left, "the old run's processes survived the new `hearth up`:\n" + "\n".join(left)
    assert again.ready() == 200
    assert "Traceback" not in again.output(), again.output()[-3000:]

    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(60) == 0, again.output()[-3000:]
    assert not wait_gone(data_dir, GONE_WITHIN_S)
