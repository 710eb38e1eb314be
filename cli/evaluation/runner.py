"""Run every retrieval mode over a BEIR dataset indexed in a fresh embedded PostgreSQL, and
report quality (nDCG@10, Recall@10/100, MRR@10) and latency percentiles."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from core.db import connect
from core.embedded import EmbeddedPostgres
from core.embedder import Embedder
from core.migrate import migrate
from core.settings import Settings
from retrieval import index
from retrieval.rerank import EmbedderReranker, Reranker, load_reranker
from retrieval.search import SearchParams, search

from .beir import Dataset
from .cache import CachedEmbedder
from .corpus import index_dataset
from .metrics import evaluate

DEPTH = 100  # documents ranked per query (Recall@100)


@dataclass(frozen=True)
class Mode:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    rerank: bool = False


MODES = (
    Mode("lexical", {"mode": "lexical"}),
    Mode("dense", {"mode": "dense"}),
    Mode("hybrid-rrf", {"mode": "hybrid", "fusion": "rrf"}),
    Mode("hybrid-score", {"mode": "hybrid", "fusion": "score"}),
    Mode("hybrid+rerank", {"mode": "hybrid"}, rerank=True),
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values), q))


async def run_mode(
    url: str,
    data: Dataset,
    qvecs: dict[str, np.ndarray],
    params: SearchParams,
    doc_ids: dict[int, str],
    reranker: Reranker | None,
) -> tuple[dict[str, list[str]], list[float]]:
    """Each query's ranked BEIR doc ids through retrieval.search.search, and its latencies (s)."""
    run: dict[str, list[str]] = {}
    latencies: list[float] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        from pgvector.psycopg import register_vector_async

        await register_vector_async(conn)
        for qid, text in data.queries.items():
            start = time.perf_counter()
            passages = await search(conn, text, qvecs[qid], params, reranker)
            latencies.append(time.perf_counter() - start)
            ranked = [doc_ids[p.document_id] for p in passages if p.document_id in doc_ids]
            run[qid] = list(dict.fromkeys(ranked))
    return run, latencies


def api_latency(
    url: str, settings: Settings, embedder: Embedder, data: Dataset, n: int = 100
) -> dict[str, float]:
    """p50/p95 of POST /v1/search (hybrid, k=10, query embedded per request) in-process."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.store import accounts

    with connect(url) as conn:
        # an admin reads the benchmark's (ownerless) collection
        user = accounts.ensure_user(conn, "eval", "admin")
        token = accounts.issue_token(conn, user, "hearth eval")
        conn.commit()
    # a latency benchmark, not a client to throttle
    unthrottled = {"database_url": url, "rate_limit_rps": 0}
    app = create_app(settings.model_copy(update=unthrottled), embedder=embedder)
    times: list[float] = []
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for text in list(data.queries.values())[:n]:
            start = time.perf_counter()
            resp = client.post("/v1/search", json={"query": text, "k": 10}, headers=headers)
            times.append(time.perf_counter() - start)
            resp.raise_for_status()
    return {
        "requests": len(times),
        "p50_ms": percentile(times, 50) * 1000,
        "p95_ms": percentile(times, 95) * 1000,
    }


def run_eval(
    data: Dataset,
    settings: Settings,
    embedder: Embedder,
    *,
    cache_path: Path,
    db_dir: Path | None = None,
    with_api: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Index `data` (embeddings cached at `cache_path`) and measure every mode; the report."""
    cached = CachedEmbedder(embedder, cache_path)
    with ExitStack() as stack:
        if db_dir is None:
            db_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hearth-eval-")))
        server = EmbeddedPostgres(db_dir / "postgres")
        url = server.start()
        stack.callback(server.stop)
        migrate(url, embed_model=embedder.name, embed_dim=embedder.dim)

        start = time.perf_counter()
        with connect(url) as conn:
            doc_ids = index_dataset(
                conn,
                data,
                cached,
                chunk_size=settings.chunk_size,
                overlap=settings.chunk_overlap,
                progress=lambda done, total: (
                    say(f"  indexed {done}/{total} documents")
                    if done % 1024 < 64 or done == total
                    else None
                ),
            )
            chunks = index.chunk_count(conn)
        index_s = time.perf_counter() - start
        say(f"indexed in {index_s:.0f}s; embedding cache: {cached.hits} hits, {cached.misses} new")

        qids = list(data.queries)
        vecs = cached.embed([data.queries[q] for q in qids])
        qvecs = dict(zip(qids, vecs, strict=True))
        reranker: Reranker
        if settings.rerank_model:
            reranker = load_reranker(settings.rerank_model)
            rerank_name = reranker.name
        else:
            reranker = EmbedderReranker(cached)
            rerank_name = f"stand-in: {reranker.name} (no RERANK_MODEL)"
        # one passage per document, DEPTH of them: the ranked documents the metrics read
        base = SearchParams.from_settings(settings, limit=DEPTH, max_per_document=1)
        modes: dict[str, Any] = {}
        for mode in MODES:
            params = replace(base, **mode.overrides)
            run, lat = asyncio.run(
                run_mode(url, data, qvecs, params, doc_ids, reranker if mode.rerank else None)
            )
            modes[mode.name] = {
                **evaluate(run, data.qrels),
                "p50_ms": percentile(lat, 50) * 1000,
                "p95_ms": percentile(lat, 95) * 1000,
            }
            say(f"  {mode.name}: nDCG@10 {modes[mode.name]['ndcg@10']:.4f}")
        api = api_latency(url, settings, embedder, data) if with_api else None
    cached.close()
    return {
        "dataset": data.name,
        "documents": len(data.corpus),
        "queries": len(data.queries),
        "chunks": chunks,
        "embed_model": embedder.name,
        "reranker": rerank_name,
        "index_seconds": round(index_s, 1),
        "embedding_cache": {"hits": cached.hits, "misses": cached.misses},
        "params": {k: v for k, v in asdict(base).items() if k != "filter"},
        "modes": modes,
        "api_search": api,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table."""
    head = (
        f"{report['dataset']}: {report['documents']} documents ({report['chunks']} chunks), "
        f"{report['queries']} queries; embedder {report['embed_model']}; "
        f"rerank {report['reranker']}"
    )
    cols = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
    lines = [
        head,
        f"{'mode':<15}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'p50 ms':>9}{'p95 ms':>9}",
    ]
    for name, m in report["modes"].items():
        nums = "".join(f"{m[c]:>{9 if c == 'ndcg@10' else 8}.4f}" for c in cols)
        lines.append(f"{name:<15}{nums}{m['p50_ms']:>9.1f}{m['p95_ms']:>9.1f}")
    lines.append(f"(latency: retrieval.search.search at k={DEPTH}, query embedding cached)")
    if report.get("api_search"):
        a = report["api_search"]
        lines.append(
            f"POST /v1/search (hybrid, k=10, embeds the query): p50 {a['p50_ms']:.1f} ms, "
            f"p95 {a['p95_ms']:.1f} ms over {a['requests']} requests"
        )
    return "\n".join(lines)
