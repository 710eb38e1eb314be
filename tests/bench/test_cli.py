"""`hearth bench`: the subcommand's wiring, and what each benchmark is run with."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench import cli
from cli.bench import bench_command
from cli.main import parse_args


def test_hearth_bench_hands_its_arguments_to_the_bench_package() -> None:
    args = parse_args(["bench", "search", "--scale", "1000", "--json", "o.json"])
    assert bench_command(args.args)[1:] == [
        "-m",
        "bench",
        "search",
        "--scale",
        "1000",
        "--json",
        "o.json",
    ]
    assert parse_args(["bench"]).args == []
    assert parse_args(["bench", "--help"]).args == ["--help"]


def test_bench_parses_its_arguments() -> None:
    ap = argparse.ArgumentParser()
    cli.add_arguments(ap)
    args = ap.parse_args(["search", "--scale", "1000", "--json", "o.json"])
    assert (args.which, args.scale, args.quick) == ("search", 1000, False)
    assert args.json == Path("o.json")
    assert ap.parse_args([]).which == "all"
    args = ap.parse_args(["all", "--quick", "--litellm", "--no-llm"])
    assert (args.which, args.quick, args.litellm, args.no_llm) == ("all", True, True, True)
    assert ap.parse_args(["soak", "--minutes", "2"]).minutes == 2.0
    with pytest.raises(SystemExit):
        ap.parse_args(["nonsense"])


def test_hearth_bench_runs_the_installed_bench_package_from_anywhere(tmp_path: Path) -> None:
    """No path trick: `hearth bench --help` works from a directory that is not the checkout."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "bench", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "usage: hearth bench" in out.stdout
    assert "soak" in out.stdout


def test_all_runs_every_benchmark_into_its_own_file_and_reports_failures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: dict[str, list[str]] = {}

    def fake(name: str):  # type: ignore[no-untyped-def]
        def main(argv: Sequence[str]) -> int:
            calls[name] = list(argv)
            if name == "rag":
                raise RuntimeError("boom")
            return 0

        return main

    monkeypatch.setattr(cli, "_module", fake)
    assert cli.run("all", quick=True, json=tmp_path) == 1  # rag failed, the others still ran
    assert list(calls) == ["ingest", "search", "rag", "chat", "llm"]
    for name, argv in calls.items():
        assert argv[:2] == ["--json", str(tmp_path / f"{name}.json")]
    assert "--quick" in calls["ingest"]
    assert calls["ingest"][-2:] == ["--onnx-cache", str(cli.ONNX_CACHE)]  # exported once
    assert calls["search"][-2:] == calls["rag"][-2:] == ["--scale", str(cli.QUICK_SCALE)]
    assert calls["llm"][-1] == "--if-available"  # no CPU vLLM: said, not a failure of `all`

    calls.clear()
    assert cli.run("all", json=tmp_path, no_llm=True, data_dir=tmp_path / "ds") == 1
    assert list(calls) == ["ingest", "search", "rag", "chat"]
    ds = str(tmp_path / "ds" / f"search-{cli.FULL_SCALE}")  # search's, reused by rag
    assert calls["search"][-2:] == calls["rag"][-2:] == ["--data-dir", ds]

    calls.clear()
    assert cli.run("search", scale=2000, json=tmp_path / "s.json") == 0
    assert calls == {"search": ["--json", str(tmp_path / "s.json"), "--scale", "2000"]}
    calls.clear()
    assert cli.run("llm", json=tmp_path / "l.json") == 0
    assert calls == {"llm": ["--json", str(tmp_path / "l.json")]}  # by name: a missing vLLM fails


def test_litellm_flag_installs_it_before_the_gateway_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bench import litellm_venv

    order: list[str] = []
    monkeypatch.setattr(litellm_venv, "ensure_litellm", lambda: order.append("install"))

    def fake(name: str):  # type: ignore[no-untyped-def]
        def main(argv: Sequence[str]) -> int:
            order.append(name)
            return 0

        return main

    monkeypatch.setattr(cli, "_module", fake)
    assert cli.run("chat", json=tmp_path / "c.json", litellm=True) == 0
    assert order == ["install", "chat"]
    order.clear()
    assert cli.run("chat", json=tmp_path / "c.json") == 0
    assert order == ["chat"]


def test_ensure_litellm_leaves_an_installed_one_alone_and_reports_a_failed_install(
    tmp_path: Path,
) -> None:
    from bench.litellm_venv import ensure_litellm, executable

    exe = executable(tmp_path / "ok")
    exe.parent.mkdir(parents=True)
    exe.touch()
    assert ensure_litellm(tmp_path / "ok") is None
    # a venv that cannot be made is a reason the gateway bench prints, not a crash
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bin").write_text("not a folder")
    note = ensure_litellm(broken / "bin" / "venv", timeout_s=60)
    assert note is not None and "LiteLLM install failed" in note
