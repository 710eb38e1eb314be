"""`hearth eval`: metrics against hand computations, BEIR loading, the embedding cache, a whole
run on a tiny generated dataset, and the --quick run on SciFact (slow)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli.evaluation import beir
from cli.evaluation.cache import CachedEmbedder
from cli.evaluation.metrics import evaluate, mrr_at, ndcg_at, recall_at
from cli.evaluation.runner import MODES, format_table, run_eval
from cli.main import main
from core.settings import get_settings
from tests.factories import HashEmbedder

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "scifact"


def test_metrics_by_hand() -> None:
    rel = {"a": 1, "b": 1}
    ranked = ["x", "a", "y", "b"]
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert ndcg_at(ranked, rel, 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert ndcg_at(ranked, rel, 1) == 0.0
    assert recall_at(ranked, rel, 2) == 0.5 and recall_at(ranked, rel, 100) == 1.0
    assert mrr_at(ranked, rel, 10) == 0.5 and mrr_at(ranked, rel, 1) == 0.0
    assert ndcg_at(["a", "b"], {"a": 2, "b": 1}, 10) == pytest.approx(1.0)
    means = evaluate({"q1": ["a"], "q2": []}, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert means == {"ndcg@10": 0.5, "recall@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5}


def write_beir(root: Path) -> Path:
    """A tiny BEIR folder: five documents, three queries with qrels (one judged not relevant)."""
    root.mkdir(parents=True)
    docs = {
        "d1": ("Boiler faults", "Error code E-4471 means the pressure sensor failed."),
        "d2": ("Garden", "Tomatoes need full sun and watering every morning."),
        "d3": ("Cats", "Our cat Miso sleeps on the sofa all afternoon."),
        "d4": ("Savings", "The savings account pays interest each year."),
        "d5": ("Solar", "The solar array was installed on the roof in 2021."),
    }
    with (root / "corpus.jsonl").open("w") as f:
        for i, (title, text) in docs.items():
            f.write(json.dumps({"_id": i, "title": title, "text": text}) + "\n")
    queries = {"q1": "E-4471 error", "q2": "watering tomatoes", "q3": "cat sleeping", "q4": "x"}
    with (root / "queries.jsonl").open("w") as f:
        for i, text in queries.items():
            f.write(json.dumps({"_id": i, "text": text}) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq4\td4\t0\n"
    )
    return root


def test_load_keeps_only_judged_queries(tmp_path: Path) -> None:
    data = beir.load(write_beir(tmp_path / "tiny"))
    assert len(data.corpus) == 5 and data.corpus["d1"].title == "Boiler faults"
    assert set(data.queries) == set(data.qrels) == {"q1", "q2", "q3"}
    small = beir.subset(data, docs=6, max_queries=2)  # relevant docs take at most a third
    assert len(small.queries) == 2 and len(small.corpus) == 5
    for rel in small.qrels.values():
        assert set(rel) <= set(small.corpus)
    assert list(beir.limit_queries(data, 1).queries) == ["q1"]


def test_the_cache_embeds_each_text_once(tmp_path: Path) -> None:
    inner = HashEmbedder()
    cache = CachedEmbedder(inner, tmp_path / "c.sqlite")
    first = cache.embed(["a b", "c", "a b"])
    assert cache.misses == 3 and np.allclose(first, inner.embed(["a b", "c", "a b"]))
    cache.close()
    again = CachedEmbedder(inner, tmp_path / "c.sqlite")
    assert np.allclose(again.embed(["c", "a b"]), first[[1, 0]])
    assert (again.hits, again.misses) == (2, 0)
    again.close()


def test_a_whole_run_on_a_tiny_dataset(tmp_path: Path) -> None:
    data = beir.load(write_beir(tmp_path / "tiny"))
    settings = get_settings()

    def run() -> dict[str, Any]:
        return run_eval(
            data,
            settings,
            HashEmbedder(),
            cache_path=tmp_path / "cache.sqlite",
            db_dir=tmp_path / "db",
            with_api=False,
            say=lambda _: None,
        )

    report = run()
    assert list(report["modes"]) == [m.name for m in MODES]
    assert report["documents"] == 5 and report["queries"] == 3 and report["chunks"] == 5
    lexical = report["modes"]["lexical"]
    assert lexical["ndcg@10"] == pytest.approx(1.0) and lexical["recall@100"] == 1.0
    assert "stand-in" in report["reranker"]
    assert "hybrid-rrf" in format_table(report)
    # a second run on the kept database re-indexes nothing and embeds nothing new
    again = run()
    assert again["embedding_cache"]["misses"] == 0
    for name in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert again["modes"]["lexical"][name] == lexical[name]


@pytest.mark.slow
@pytest.mark.skipif(
    not SCIFACT.is_dir() and not os.environ.get("CI"),  # CI always has shared/ beside the repo
    reason="needs ../shared/datasets/scifact beside the repository",
)
def test_quick_eval_on_scifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    # 40 queries: every mode and the API's leg still run, for a third of the full quick run's time
    argv = ["eval", "--dataset", str(SCIFACT), "--quick", "--limit-queries", "40"]
    code = main([*argv, "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "nDCG@10" in printed and "POST /v1/search" in printed
    report = json.loads(out.read_text())
    assert set(report["modes"]) == {m.name for m in MODES}
    assert 0 < report["queries"] <= 40
    for metrics in report["modes"].values():
        assert set(metrics) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_ms"}
    assert report["modes"]["lexical"]["ndcg@10"] > 0.3
    assert report["modes"]["hybrid-rrf"]["recall@100"] > 0.5
