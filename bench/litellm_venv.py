"""LiteLLM's proxy for the gateway benchmark, in its own virtual environment under .cache (its
pins clash with Hearth's, so never in Hearth's venv): created and installed from PyPI on request.

    python -m bench.litellm_venv        # what `hearth bench chat --litellm` does first
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from .harness import REPO, say

VENV = REPO / ".cache" / "bench-litellm"
REQUIREMENT = "litellm[proxy]"
INSTALL_TIMEOUT_S = 900.0


def executable(venv: Path = VENV) -> Path:
    return venv / "bin" / "litellm"


def ensure_litellm(venv: Path = VENV, timeout_s: float = INSTALL_TIMEOUT_S) -> str | None:
    """Install LiteLLM's proxy into `venv` unless its executable is already there. None when it
    is ready; otherwise why not (the gateway benchmark then runs without it and says so)."""
    if executable(venv).exists():
        return None
    started = time.monotonic()
    say(f"installing {REQUIREMENT} into {venv} (PyPI; a few minutes the first time)")
    # a venv left half-made by an interrupted install is made again, not trusted
    if venv.exists() and not (venv / "bin" / "python").exists():
        shutil.rmtree(venv)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", REQUIREMENT],
    ]
    for argv in steps:
        left = timeout_s - (time.monotonic() - started)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=max(left, 1), check=False
            )
        except subprocess.TimeoutExpired:
            return f"LiteLLM install timed out after {timeout_s:.0f} s ({' '.join(argv[-2:])})"
        if done.returncode:
            tail = (done.stderr or done.stdout)[-800:]
            return f"LiteLLM install failed ({' '.join(argv[-2:])}, exit {done.returncode}): {tail}"
    if not executable(venv).exists():
        return f"LiteLLM installed but {executable(venv)} is missing"
    say(f"LiteLLM installed in {time.monotonic() - started:.0f} s")
    return None


if __name__ == "__main__":
    note = ensure_litellm()
    print(note or f"LiteLLM ready: {executable()}")
    sys.exit(1 if note else 0)
