"""The synthetic corpus: deterministic, every chunk once with its document's ordinals, unit
vectors clustered as promised, queries near their documents."""

from __future__ import annotations

import numpy as np

from bench.synthetic import DIM, STOP_WORDS, SyntheticCorpus


def test_batches_cover_every_chunk_once_in_document_order() -> None:
    corpus = SyntheticCorpus(1234, seed=3)
    batches = list(corpus.batches(target_chunks=300))
    assert len(batches) > 1
    doc_ids = np.concatenate([b.doc_ids for b in batches])
    ordinals = np.concatenate([b.ordinals for b in batches])
    assert len(doc_ids) == corpus.n_chunks == sum(corpus.doc_sizes)
    assert doc_ids[0] == 1 and doc_ids[-1] == corpus.n_docs and np.all(np.diff(doc_ids) >= 0)
    for doc in (1, corpus.n_docs // 2, corpus.n_docs):
        assert list(ordinals[doc_ids == doc]) == list(range(corpus.doc_sizes[doc - 1]))
    vectors = np.concatenate([b.vectors for b in batches])
    assert vectors.shape == (corpus.n_chunks, DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    texts = [t for b in batches for t in b.texts]
    assert all(100 <= len(t.split()) < 200 for t in texts)


def test_same_seed_same_corpus() -> None:
    a, b = SyntheticCorpus(500, seed=1), SyntheticCorpus(500, seed=1)
    ba, bb = next(a.batches()), next(b.batches())
    assert ba.texts == bb.texts and np.array_equal(ba.vectors, bb.vectors)
    assert [q.text for q in a.queries(5)] == [q.text for q in b.queries(5)]
    assert next(SyntheticCorpus(500, seed=2).batches()).texts != ba.texts


def test_vectors_cluster_by_document_and_topic_and_words_follow_zipf() -> None:
    corpus = SyntheticCorpus(3000)
    batch = next(corpus.batches(target_chunks=3000))
    v, docs = batch.vectors, batch.doc_ids
    topics = corpus.doc_topic[docs - 1]
    sims = v @ v.T
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    same_doc = sims[upper & (docs[:, None] == docs[None, :])].mean()
    same_topic = sims[upper & (topics[:, None] == topics[None, :]) & (docs[:, None] != docs)]
    other = sims[upper & (topics[:, None] != topics[None, :])].mean()
    assert same_doc > same_topic.mean() > other
    words = " ".join(batch.texts).split()
    assert words.count("the") > words.count(STOP_WORDS[-1]) > 0


def test_queries_are_held_out_points_near_their_document() -> None:
    corpus = SyntheticCorpus(2000)
    batch = next(corpus.batches(target_chunks=2000))
    for q in corpus.queries(10):
        sims = batch.vectors @ q.vector
        own = sims[batch.doc_ids == q.doc_id]
        assert own.max() < 0.999  # not a copy of a chunk
        assert own.mean() > np.median(sims)
        assert 5 <= len(q.text.split()) <= 6
