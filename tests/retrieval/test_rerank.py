"""The rerank stage: ordering logic, the bi-encoder stand-in, and a real CrossEncoder loaded
from disk reordering real search results."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psycopg
import pytest

from core.types import Passage
from retrieval import index
from retrieval.hybrid import Candidate
from retrieval.rerank import CrossEncoderReranker, EmbedderReranker, load_reranker
from retrieval.search import SearchParams, rerank, search
from tests.factories import HashEmbedder, make_cross_encoder, make_document


class ByLength:
    name = "by-length"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        self.seen = list(texts)
        return np.array([len(t) for t in texts], dtype=np.float32)


def cand(cid: int, text: str, context: str = "") -> Candidate:
    p = Passage(cid, cid, f"/{cid}", None, text, (), None, 0, len(text), 0.0)
    return Candidate(p, 0, context, 0.5, None)


def test_rerank_orders_the_head_and_keeps_the_tail() -> None:
    ranked = [(cand(1, "aa"), 0.9), (cand(2, "aaa", "T"), 0.8), (cand(3, "aaaaaaa"), 0.7)]
    scorer = ByLength()
    out = rerank(scorer, "q", ranked, top_n=2)
    assert [(c.passage.chunk_id, s) for c, s in out] == [(2, 5.0), (1, 2.0), (3, 0.7)]
    assert scorer.seen == ["aa", "T\naaa"]  # it reads the context line too, as embedded


def test_the_stand_in_scores_by_cosine() -> None:
    emb = HashEmbedder()
    scores = EmbedderReranker(emb).score("boiler pressure", ["boiler pressure", "tomato", "boiler"])
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(0.0)
    assert 0 < scores[2] < 1


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cross_encoder(tmp_path_factory.mktemp("ce") / "model")


def test_a_cross_encoder_from_disk_reorders_search_results(
    cross_encoder: Path, db: psycopg.Connection, pg_url: str
) -> None:
    emb = HashEmbedder()
    texts = [f"boiler note {i}: the pressure was {i} bar" for i in range(8)]
    for i, text in enumerate(texts):
        doc = make_document(f"/n/{i}.md", [text], title="Notes")
        index.replace_chunks(db, doc, emb.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    reranker = load_reranker(str(cross_encoder))
    assert load_reranker(str(cross_encoder)) is reranker  # loaded once per process
    assert isinstance(reranker, CrossEncoderReranker)

    async def go() -> list[Passage]:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            from pgvector.psycopg import register_vector_async

            await register_vector_async(conn)
            params = SearchParams(limit=5, rerank_candidates=8, dedup_threshold=1.0)
            q = "boiler pressure"
            return await search(conn, q, emb.embed([q])[0], params, reranker)

    hits = asyncio.run(go())
    expected = reranker.score("boiler pressure", [f"Notes\n{t}" for t in texts])
    best = sorted(range(8), key=lambda i: -expected[i])[:5]
    assert [h.path for h in hits] == [f"/n/{i}.md" for i in best]
    assert [h.score for h in hits] == pytest.approx([float(expected[i]) for i in best], rel=1e-4)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CrossEncoderReranker(tmp_path / "nothing")
