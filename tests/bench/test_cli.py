"""`hearth bench`: the subcommand's wiring, and what each benchmark is run with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from api.cli.main import build_parser
from bench import cli


def test_hearth_bench_parses_its_arguments() -> None:
    args = build_parser().parse_args(["bench", "search", "--scale", "1000", "--json", "o.json"])
    assert (args.which, args.scale, args.quick) == ("search", 1000, False)
    assert args.json == Path("o.json")
    assert build_parser().parse_args(["bench"]).which == "all"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "nonsense"])


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
    assert list(calls) == ["ingest", "search", "rag", "chat"]
    for name, argv in calls.items():
        assert argv[:2] == ["--json", str(tmp_path / f"{name}.json")]
    assert "--quick" in calls["ingest"]
    assert calls["search"][-2:] == calls["rag"][-2:] == ["--scale", str(cli.QUICK_SCALE)]

    calls.clear()
    assert cli.run("search", scale=2000, json=tmp_path / "s.json") == 0
    assert calls == {"search": ["--json", str(tmp_path / "s.json"), "--scale", "2000"]}
