"""An embedder that remembers: vectors are kept on disk (SQLite) under the hash of the model name
and the text, so a second evaluation run embeds nothing it has embedded before."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.embedder import Embedder


class CachedEmbedder:
    """Wraps an embedder; same interface. Calls are serialised (SQLite, one connection)."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.hits = 0
        self.misses = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL)"
        )

    def __getattr__(self, name: str):  # tokenizer, max_tokens, ... of the real embedder
        return getattr(self.inner, name)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def _key(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.name}\0{self.dim}\0{text}".encode()).digest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._embed(texts)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        keys = [self._key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            marks = ",".join("?" * len(batch))
            for key, blob in self._db.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({marks})", batch
            ):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            vecs = np.asarray(self.inner.embed([texts[i] for i in missing]), dtype=np.float32)
            new = {keys[i]: v for i, v in zip(missing, vecs, strict=True)}
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)",
                    [(k, v.tobytes()) for k, v in new.items()],
                )
            found.update(new)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def close(self) -> None:
        self._db.close()
