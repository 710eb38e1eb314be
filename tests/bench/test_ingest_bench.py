"""What the ingest benchmark's result must hold (checked on the real run of `hearth bench all
--quick` in test_all_quick; no timing assertions: those belong to the figures, not to a test)."""

from __future__ import annotations

from typing import Any

from bench.ingest import BACKENDS, STAGES


def check_ingest(result: dict[str, Any], files: int = 5, rescan_files: int = 300) -> None:
    corpus = result["meta"]["corpus"]
    assert corpus["files"] == files
    assert set(corpus["by_kind"]) == {"md", "txt", "html", "pdf", "docx"}
    assert set(result["backends"]) == set(BACKENDS)
    chunks = {b: r["pipeline"]["chunks"] for b, r in result["backends"].items()}
    assert min(chunks.values()) > 0
    assert len(set(chunks.values())) == 1  # same chunking whatever the backend
    for b, r in result["backends"].items():
        assert r["pipeline"]["statuses"] == {"indexed": files}, b
        assert r["pipeline"]["chunks_per_s"] > 0 and r["floor"]["chunks_per_s"] > 0
        assert r["pipeline_over_floor"] > 0
        assert set(r["stages_seconds"]) == set(STAGES)
        assert all(r["stages_seconds"][s] > 0 for s in ("parse", "chunk", "embed", "write"))
        assert r["rss"]["rss_mb"] > 0 and r["rss"]["parse_child"]["peak_rss_mb"] > 0
        assert r["rss"]["inline_parsing"] is None  # --quick leaves in-process parsing out
        assert r["vs_torch"]["pipeline"] > 0
        assert (r["export_s"] is None) == (b == "torch")
    assert result["backends"]["torch"]["rss"]["torch_imported"]
    # parsing runs in a child process, so an ONNX worker never imports torch itself
    assert not result["backends"]["onnx-int8"]["rss"]["torch_imported"]
    assert "ParserProcess" in result["meta"]["parser"]

    rescan = result["rescan"]
    assert rescan["files"] == rescan["unchanged"] == rescan_files
    assert rescan["planned_ingest"] == rescan["planned_delete"] == rescan["planned_moves"] == 0
    assert rescan["seconds"] > 0


INGEST_PRINTS = ("pipe/floor", "rescan of 300 unchanged files", "synthetic prose")
