"""bench.soak: its verdict on synthetic samples, its process census on real processes, and (slow)
a half-minute run on the real stack that must produce the whole report and leave nothing running.
No timing assertions: only the shape of the result and what the verdict makes of given numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.procs import hearth_rss
from bench.soak_load import KINDS
from bench.soak_report import PARTS, render, verdict

REPO = Path(__file__).resolve().parents[2]


def sample(t_min: float, rss: dict[str, float], errors: int = 0) -> dict[str, Any]:
    kinds = {k: {"requests": 10, "errors": 0, "p50_ms": 5.0, "p95_ms": 9.0} for k in KINDS}
    kinds["search"]["errors"] = errors
    return {
        "t_s": t_min * 60,
        "rss_mb": {p: {"rss_mb": mb, "processes": 1} for p, mb in rss.items()},
        "requests": kinds,
        "documents": {"indexed": 12, "queued": 1},
        "load_average": 1.0,
    }


def run_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    meta = {"minutes": len(samples) - 1, "sample_s": 60, "cpus": 2}
    return {"meta": meta, "samples": samples, "verdict": verdict(samples), "error_examples": [],
            "restarts": 0, "log_tracebacks": 0}  # fmt: skip


def test_flat_memory_and_steady_errors_pass() -> None:
    samples = [sample(m, {"api": 500 + (m % 2) * 3, "vllm": 3000}, errors=1) for m in range(10)]
    v = verdict(samples)
    assert v["ok"] and v["memory_flat"] and v["errors_flat"]
    assert v["samples_per_third"] == 3 and set(v["memory"]) == {"api", "vllm"}
    assert abs(v["total"]["slope_mb_per_min"]) < 1
    text = render(run_of(samples))
    assert "verdict: memory flat, errors not growing" in text
    assert len([x for x in text.splitlines() if x[:4].strip().replace(".", "").isdigit()]) == 10


def test_a_growing_part_and_growing_errors_are_called_out() -> None:
    samples = [
        sample(m, {"api": 500, "worker": 1000 + 20 * m}, errors=0 if m < 5 else 5)
        for m in range(10)
    ]
    v = verdict(samples)
    assert v["memory"]["worker"]["growing"] and not v["memory"]["api"]["growing"]
    assert v["memory"]["worker"]["slope_mb_per_min"] == pytest.approx(20, rel=0.01)
    assert v["errors"]["growing"] and not v["ok"]
    assert "worker" in render(run_of(samples)).split("GROWING")[0].splitlines()[-1]


@pytest.fixture
def fake_postmaster(tmp_path: Path) -> Iterator[Path]:
    """This process stands in for `hearth up`: children whose command lines name two parts, and
    a postmaster.pid naming a third process, as PostgreSQL's own file does."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    procs = [
        subprocess.Popen([*sleeper, "-m", "cli.main", "serve-api"]),
        subprocess.Popen([*sleeper, "-m", "cli.main", "watch"]),
        subprocess.Popen([*sleeper, "postgres"]),
    ]
    pg = tmp_path / "postgres"
    pg.mkdir()
    (pg / "postmaster.pid").write_text(f"{procs[2].pid}\n{pg}\n")
    yield pg
    for p in procs:
        p.kill()
        p.wait()


def test_the_census_finds_each_part_by_its_command_line(fake_postmaster: Path) -> None:
    parts = hearth_rss(os.getpid(), fake_postmaster)
    assert {"api", "watcher", "postgres"} <= set(parts)
    assert not {"worker", "beat", "vllm"} & set(parts)
    for name in ("api", "watcher", "postgres"):
        assert parts[name]["processes"] == 1 and parts[name]["rss_mb"] > 1
    assert "postgres" not in hearth_rss(os.getpid(), fake_postmaster / "missing")


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.slow
def test_a_half_minute_soak_on_the_real_stack(
    tmp_path: Path, env_without_hearth: dict[str, str]
) -> None:
    out = tmp_path / "soak.json"
    work = tmp_path / "soak"
    argv = ["--minutes", "0.5", "--sample-s", "7.5", "--workdir", str(work), "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", *argv],
        env=env_without_hearth,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]
    result = json.loads(out.read_text())
    samples = result["samples"]
    assert len(samples) == 5  # t = 0, 7.5, 15, 22.5, 30 s
    for s in samples:
        assert set(s["rss_mb"]) == set(PARTS), s["rss_mb"]  # every part of the stack was found
        assert all(p["rss_mb"] > 0 for p in s["rss_mb"].values())
        assert set(s["requests"]) == set(KINDS)
    assert samples[0]["documents"] == {"indexed": 7}  # the seed files and the warm-up upload
    assert samples[1]["rss_mb"]["vllm"]["processes"] > 1  # its engine core came along
    for kind in ("search", "upload", "write"):  # a chat may take the whole half minute
        assert sum(s["requests"][kind]["requests"] for s in samples) > 0, kind
    v = result["verdict"]
    assert set(v["memory"]) == set(PARTS)
    assert {"memory_flat", "errors_flat", "ok", "total", "errors"} <= set(v)
    # the table's header (its columns are as wide as their widest figure)
    assert "verdict: memory" in run.stdout and re.search(r"^min +api +wrk", run.stdout, re.M)
    assert out.with_suffix(".log").read_text().count("Hearth is up.") == 1
    assert processes_mentioning(str(work)) == []  # `hearth up` stopped everything it started


def test_hearth_bench_soak_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import cli, soak

    calls: list[list[str]] = []
    monkeypatch.setattr(soak, "main", lambda argv: calls.append(list(argv)) or 0)
    assert cli.main(["soak", "--minutes", "3", "--json", "o.json"]) == 0
    assert calls == [["--minutes", "3.0", "--json", "o.json"]]
    assert soak.parse_args(calls[0]).minutes == 3.0
