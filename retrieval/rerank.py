"""Optional second stage: a cross-encoder reads (query, passage) pairs and re-scores the best
fused candidates. Loaded from a local folder only (RERANK_MODEL); off when none is configured."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from core.embedder import Embedder


class Reranker(Protocol):
    name: str

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """One relevance score per text, higher is better (any scale)."""
        ...


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder from disk; `score` is thread-safe."""

    def __init__(self, path: str | Path, *, batch_size: int = 32, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"RERANK_MODEL {str(path)!r} is not a folder")
        self.name = str(path)
        self.batch_size = batch_size
        self._model = CrossEncoder(str(folder), device=device, local_files_only=True)
        self._lock = threading.Lock()

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            out = self._model.predict(
                [(query, t) for t in texts],
                batch_size=self.batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        scores = np.asarray(out, dtype=np.float32)
        return scores[:, -1] if scores.ndim == 2 else scores  # a 2-label head: "relevant"


class EmbedderReranker:
    """Stand-in scorer: cosine similarity from the bi-encoder. It exercises the rerank stage for
    real where no cross-encoder can be had, but brings no new signal (it re-sorts by the dense
    leg's own similarity); use a cross-encoder for the quality gain."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.name = f"bi-encoder:{embedder.name}"

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        vecs = self.embedder.embed([query, *texts])
        return np.asarray(vecs[1:] @ vecs[0], dtype=np.float32)


@functools.cache
def load_reranker(path: str, batch_size: int = 32) -> CrossEncoderReranker:
    """The cross-encoder at `path`, loaded once per process (the API, the CLI and chat share it)."""
    return CrossEncoderReranker(path, batch_size=batch_size)
