"""`hearth bench all --quick`, the real command as a user runs it: every benchmark runs end to end
at smoke size and writes its result file, each checked by its module's test (no timing
assertions: the figures are the benchmark's, not the test's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli
from tests.bench.test_e2e_llm import LLM_PRINTS, check_llm
from tests.bench.test_gateway import GATEWAY_PRINTS, check_gateway
from tests.bench.test_ingest_bench import INGEST_PRINTS, check_ingest
from tests.bench.test_rag_turn import RAG_PRINTS, check_rag
from tests.bench.test_search_scale import SEARCH_PRINTS, check_search


def _hearth() -> list[str]:
    script = Path(sys.executable).parent / "hearth"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_hearth_bench_all_quick_writes_every_result(tmp_path: Path) -> None:
    results, data = tmp_path / "results", tmp_path / "ds"
    argv = [*_hearth(), "bench", "all", "--quick", "--json", str(results), "--data-dir", str(data)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=2600, check=False, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr[-6000:]
    assert sorted(p.name for p in results.iterdir()) == sorted(f"{n}.json" for n in cli.BENCHES)
    read = {n: json.loads((results / f"{n}.json").read_text()) for n in cli.BENCHES}

    check_ingest(read["ingest"], files=5, rescan_files=300)
    check_search(read["search"], chunks=cli.QUICK_SCALE, queries=20, recall_queries=10)
    assert read["search"]["meta"]["dataset_dir"] == str(data / f"search-{cli.QUICK_SCALE}")
    check_rag(read["rag"], chunks=cli.QUICK_SCALE, questions=6)
    # rag found search's index and reused it
    assert read["rag"]["meta"]["dataset_dir"] == read["search"]["meta"]["dataset_dir"]
    check_gateway(read["chat"], levels=(1, 8), requests=10, tokens=8)
    if os.environ.get("HEARTH_TEST_LLM_DIR"):  # `make test` sets it: vLLM must have run
        check_llm(read["llm"], requests=2, max_tokens=8)
    else:
        assert read["llm"]["available"] is True or read["llm"]["reason"]

    for prints in (INGEST_PRINTS, SEARCH_PRINTS, RAG_PRINTS, GATEWAY_PRINTS):
        for text in prints:
            assert text in done.stdout, text
    if read["llm"]["available"]:
        assert all(text in done.stdout for text in LLM_PRINTS)
    else:
        assert "NOT RUN, the CPU vLLM is not available" in done.stdout
    assert "=== llm: exit 0" in done.stderr
