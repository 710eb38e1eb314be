"""The local CPU LLM: vLLM's OpenAI-compatible server (CPU build) serving SmolLM2-135M-Instruct
from PyPI (converted by llm_convert), run from its own virtual environment (.venv-vllm: its pins
clash with ours) as a child in its own process group. See shared/notes/cpu-llm.md.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import httpx

from core.lifeline import die_with_parent
from core.offline import OFFLINE_ENV

from .llm_convert import LLMServerError

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


# the server ----------------------------------------------------------------------------------


def _default_threads_bind() -> str:
    n = os.cpu_count() or 1
    return "0" if n == 1 else f"0-{n - 1}"


class LocalLLMServer:
    """vLLM's OpenAI-compatible server (CPU build) as a child process in its own process group.

    `with LocalLLMServer(...) as server:` starts it and waits until it answers; leaving the block
    stops it. Tunables already in the environment (VLLM_CPU_KVCACHE_SPACE,
    VLLM_CPU_OMP_THREADS_BIND, VLLM_CPU_NUM_OF_RESERVED_CPU, VLLM_ENABLE_V1_MULTIPROCESSING) win
    over the defaults here.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        python: Path,
        port: int,
        cache_dir: Path,
        log_path: Path,
        served_model_name: str = "smollm2",
        max_model_len: int = 4096,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 600.0,
        base_env: Mapping[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """`die_with_parent`: the server gets SIGTERM when the thread that started it exits
        (`hearth up`'s main thread), however it exits."""
        self.die_with_parent = die_with_parent
        self.model_dir = Path(model_dir).expanduser().absolute()
        self.python = Path(python).expanduser().absolute()  # not resolve(): keep the venv link
        self.port = port
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self.log_path = Path(log_path).expanduser().absolute()
        self.served_model_name = served_model_name
        self.max_model_len = max_model_len
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # what it runs ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_model_name,
            "--max-model-len",
            str(self.max_model_len),
            "--enforce-eager",  # ready in ~40 s instead of ~3 min of torch.compile
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(self._base_env)
        # a PYTHONPATH/PYTHONHOME meant for our venv must not leak into vLLM's
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(key, None)
        # without it vLLM asks for ~14 GiB of KV cache and refuses to start; 1 GiB is plenty here
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", _default_threads_bind())
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        # One rank: the model runs in the engine-core process instead of a third process (the
        # CPU platform's default, the multiprocess executor). Measured here on SmolLM2: ready in
        # ~17-19 s instead of ~25-33 s, 150 greedy tokens 5.2-5.8 s instead of 5.9-6.4 s, 8
        # concurrent streams 224 tok/s instead of 165 (32: 560 against 499), and one fewer
        # process holding torch's memory.
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        env.update(OFFLINE_ENV)
        env.update(
            {
                "HF_HUB_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",  # no usage reports leave a private deployment
                "DO_NOT_TRACK": "1",
                "VLLM_CACHE_ROOT": str(self.cache_dir),
            }
        )
        return env

    # lifecycle ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self._proc is not None:
            raise LLMServerError("the LLM server was already started")
        if not self.python.exists():
            raise LLMServerError(f"vLLM's Python not found: {self.python}")
        if not (self.model_dir / "config.json").is_file():
            raise LLMServerError(
                f"no model in {self.model_dir}; run `hearth llm prepare --out {self.model_dir}`"
            )
        _check_port_free(self.host, self.port)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._log.write(f"\n=== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        self._log.flush()
        try:
            self._proc = subprocess.Popen(
                cmd,
                env=self.environment(),
                cwd=self.cache_dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent() if self.die_with_parent else None,
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise
        atexit.register(self.stop)
        log.info(
            "started vLLM (pid %d) on %s, log %s", self._proc.pid, self.base_url, self.log_path
        )

    def wait_ready(self, timeout_s: float | None = None) -> float:
        """Block until GET /v1/models answers 200; return the seconds waited.

        Raises LLMServerError (a RuntimeError) with the log's tail if the process dies first, and
        TimeoutError (also with the tail) if it is not ready in time. Does not stop the server.
        """
        if self._proc is None:
            raise LLMServerError("the LLM server was not started")
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        deadline = started + timeout_s
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise LLMServerError(
                        f"vLLM exited with code {code} before it was ready; "
                        f"last lines of {self.log_path}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    ok = client.get(f"{self.base_url}/models").status_code == 200
                    if ok and self._proc.poll() is None:  # ours answered, not a stranger's
                        return time.monotonic() - started
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"vLLM not ready after {timeout_s:.0f} s; "
                        f"last lines of {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.5)

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the server process to exit; its exit code, or None on timeout."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self) -> None:
        """SIGTERM the whole process group and return; `stop` waits for it."""
        if self._proc is not None:
            _signal_group(self._proc.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after `timeout_s`."""
        proc = self._proc
        if proc is not None:
            pgid = proc.pid  # start_new_session=True: the child leads its own group
            deadline = time.monotonic() + timeout_s
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
            # vLLM's engine runs in further processes of the group: wait for them too
            while process_group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if process_group_alive(pgid) or proc.poll() is None:
                log.warning("vLLM did not stop within %.0f s; killing it", timeout_s)
                _signal_group(pgid, signal.SIGKILL)
                proc.wait()
                kill_deadline = time.monotonic() + 5.0
                while process_group_alive(pgid) and time.monotonic() < kill_deadline:
                    time.sleep(0.1)
            self._proc = None
            atexit.unregister(self.stop)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                data = fh.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(data.splitlines()[-lines:])

    def __enter__(self) -> LocalLLMServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise LLMServerError(
                f"port {port} on {host} is in use ({exc.strerror}); is an LLM server already "
                "running? Set LLM_LOCAL_PORT to another port, or LLM_BASE_URL to use that one"
            ) from None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def process_group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in the group. Zombies are skipped because a
    container's PID 1 may never reap the orphans vLLM leaves behind."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def from_settings(settings: Settings, *, die_with_parent: bool = False) -> LocalLLMServer:
    """The local server as Hearth's settings describe it (model, port, vLLM venv, data dir)."""
    python = settings.vllm_python_path
    if not python.exists():
        raise LLMServerError(
            f"vLLM's Python not found at {python}. Run `make run` (it builds .venv-vllm with the "
            "CPU build of vLLM), point VLLM_PYTHON at one, or set LLM_BASE_URL to use an "
            "OpenAI-compatible server you already have"
        )
    llm_dir = settings.hearth_data_dir / "llm"
    return LocalLLMServer(
        settings.local_model_dir,
        python=python,
        port=settings.llm_local_port,
        served_model_name=settings.llm_model,
        max_model_len=settings.llm_max_model_len,
        cache_dir=llm_dir / "vllm-cache",
        log_path=llm_dir / "vllm.log",
        die_with_parent=die_with_parent,
    )
