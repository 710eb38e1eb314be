"""Synthetic chunks at any scale, shaped like a real index: clustered 384-d unit vectors and
generated text whose words follow a Zipf law, with topic and document words so BM25 has
something to find. Deterministic for a given (chunks, seed); nothing here is real data.

Vectors: 1,000 topic centres that share a common direction (real sentence embeddings are
anisotropic: unrelated texts still score ~0.1), a document vector near its topic centre and
each chunk near its document. Cosine similarity comes out near 0.75 within a document, 0.5
within a topic and 0.1 across topics, like MiniLM's. Queries are held-out chunks of random
documents: near the data, never in it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

DIM = 384
TOPICS = 1000
VOCABULARY = 30_000
DOC_SIGMA = 0.04  # per dimension: |noise| ~ 0.78 against a unit centre
CHUNK_SIGMA = 0.035  # |noise| ~ 0.69
QUERY_SIGMA = 0.045
COMMON_DIRECTION = 0.35
TOPIC_WORDS, DOC_WORDS = 40, 6
_STOP = (
    "the of and to a in is that for it as with was on be by this are or at from have an not"
    " which but they their has were will can its more one all also about been"
)
STOP_WORDS = _STOP.split()  # the head of the Zipf law, as in English; to_tsvector drops them
DESCRIPTION = (
    "SYNTHETIC data: clustered 384-d unit vectors (1,000 topics, documents of ~8 chunks) and"
    " generated text (a 30,000-word Zipf vocabulary with topic and document words); queries"
    " are held-out points near the data"
)


@dataclass(frozen=True)
class Batch:
    """Consecutive chunks of whole documents."""

    doc_ids: np.ndarray  # 1-based documents.id per chunk
    ordinals: np.ndarray
    texts: list[str]
    vectors: np.ndarray  # float32, unit rows


@dataclass(frozen=True)
class Query:
    text: str
    vector: np.ndarray
    doc_id: int


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    onsets = [*"bdfgklmnprstvz", "br", "tr", "st", "pl", "kr", "sh"]
    syllables = [o + v for o in onsets for v in "aeiou"]
    words: dict[str, None] = dict.fromkeys(STOP_WORDS)
    while len(words) < size:
        n = int(rng.integers(2, 5))
        word = "".join(syllables[i] for i in rng.integers(0, len(syllables), n))
        words.setdefault(word + ("n" if rng.random() < 0.3 else ""))
    return list(words)[:size]


class SyntheticCorpus:
    def __init__(self, n_chunks: int, *, seed: int = 0) -> None:
        if n_chunks < 1:
            raise ValueError("at least one chunk")
        self.n_chunks, self.seed = n_chunks, seed
        rng = np.random.default_rng(seed)
        self.vocab = np.array(_vocabulary(rng, VOCABULARY), dtype=object)
        zipf = 1.0 / np.arange(1, VOCABULARY + 1)
        self.word_cdf = np.cumsum(zipf) / zipf.sum()
        topic_zipf = 1.0 / np.arange(1, TOPIC_WORDS + 1)
        self.topic_cdf = np.cumsum(topic_zipf) / topic_zipf.sum()
        common = _unit(rng.normal(size=DIM))
        self.centres = _unit(
            rng.normal(size=(TOPICS, DIM)) / np.sqrt(DIM) + COMMON_DIRECTION * common
        )
        self.topic_words = rng.integers(300, VOCABULARY, size=(TOPICS, TOPIC_WORDS))
        sizes: list[int] = []
        while sum(sizes) < n_chunks:  # ~8 chunks a document, 1..40
            sizes.append(int(min(40, rng.geometric(1 / 8))))
        sizes[-1] -= sum(sizes) - n_chunks
        self.doc_sizes = np.array(sizes)
        self.n_docs = len(sizes)
        popularity = 1.0 / np.arange(1, TOPICS + 1) ** 0.6
        self.doc_topic = rng.choice(TOPICS, size=self.n_docs, p=popularity / popularity.sum())
        self.doc_vectors = (
            self.centres[self.doc_topic] + rng.normal(0, DOC_SIGMA, (self.n_docs, DIM))
        ).astype(np.float32)
        self.doc_words = rng.integers(1000, VOCABULARY, size=(self.n_docs, DOC_WORDS))

    # --- documents -------------------------------------------------------------------------------
    def title(self, doc: int) -> str:
        return " ".join(self.vocab[self.topic_words[self.doc_topic[doc], :3]]).title()

    def path(self, doc: int) -> str:
        return f"/bench/synthetic/t{self.doc_topic[doc]:04d}/doc{doc + 1:07d}.md"

    # --- chunks ----------------------------------------------------------------------------------
    def batches(self, target_chunks: int = 20_000) -> Iterator[Batch]:
        """Every chunk once, in batches of whole documents of about `target_chunks` chunks."""
        first = 0
        while first < self.n_docs:
            ends = np.cumsum(self.doc_sizes[first:])
            last = first + int(np.searchsorted(ends, target_chunks)) + 1
            yield self._batch(first, min(last, self.n_docs))
            first = last

    def _batch(self, first: int, last: int) -> Batch:
        rng = np.random.default_rng([self.seed, first])
        docs = np.repeat(np.arange(first, last), self.doc_sizes[first:last])
        starts = np.cumsum(self.doc_sizes[first:last]) - self.doc_sizes[first:last]
        ordinals = np.arange(len(docs)) - np.repeat(starts, self.doc_sizes[first:last])
        vectors = _unit(self.doc_vectors[docs] + rng.normal(0, CHUNK_SIGMA, (len(docs), DIM)))
        lengths = rng.integers(100, 200, size=len(docs))
        owner = docs[np.repeat(np.arange(len(docs)), lengths)]
        words = np.searchsorted(self.word_cdf, rng.random(len(owner)))
        kind = rng.random(len(owner))
        topical = kind < 0.22
        picks = np.searchsorted(self.topic_cdf, rng.random(int(topical.sum())))
        words[topical] = self.topic_words[self.doc_topic[owner[topical]], picks]
        own = (kind >= 0.22) & (kind < 0.27)
        words[own] = self.doc_words[owner[own], rng.integers(0, DOC_WORDS, int(own.sum()))]
        tokens = self.vocab[np.minimum(words, VOCABULARY - 1)].tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        texts = [" ".join(tokens[a:b]) for a, b in itertools.pairwise(bounds)]
        return Batch(docs + 1, ordinals, texts, vectors)

    # --- queries ---------------------------------------------------------------------------------
    def queries(self, n: int, *, seed: int = 1) -> list[Query]:
        """Held-out chunks of random documents (vector) with a short question (text): two of the
        topic's words, one of the document's own, a few common words."""
        rng = np.random.default_rng([self.seed, 10_000 + seed])
        docs = rng.integers(0, self.n_docs, size=n)
        vectors = _unit(self.doc_vectors[docs] + rng.normal(0, QUERY_SIGMA, (n, DIM)))
        out = []
        for doc, vec in zip(docs.tolist(), vectors, strict=True):
            topic = self.topic_words[self.doc_topic[doc]]
            ids = [
                *topic[np.searchsorted(self.topic_cdf, rng.random(2))],
                self.doc_words[doc, rng.integers(0, DOC_WORDS)],
                *rng.integers(len(STOP_WORDS), 400, size=2),
                int(rng.integers(0, len(STOP_WORDS))),
            ]
            words = self.vocab[np.array(ids)].tolist()
            rng.shuffle(words)
            out.append(Query(" ".join(words), vec, doc + 1))
        return out
