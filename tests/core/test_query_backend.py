"""The API embeds questions on ONNX by default (core.embedder.query_embedder_for): the same fp32
model as torch, so the vectors and what they rank must be torch's; an ONNX that cannot be had
falls back to torch, and only an explicit QUERY_EMBED_BACKEND may fail the start."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from core import onnx_export
from core.embedder import SentenceTransformerEmbedder, query_backend, query_embedder_for
from core.settings import Settings

QUESTIONS = [
    "Which invoices from March are still unpaid?",
    "boiler E-4471",
    "x",
    "Ünïcödé naïve café — “quotes” and 42 numbers?",
    "WHAT DOES THE LEASE SAY ABOUT PETS",
    "Photosynthesis turns light, water and carbon dioxide into sugar. " * 40,  # > 256 tokens
]


@pytest.mark.parametrize(
    ("embed", "query", "expected"),
    [
        ("torch", None, "onnx"),
        ("onnx", None, "onnx"),
        ("onnx-int8", None, "onnx-int8"),  # int8's vectors are not fp32's: the index's own
        ("torch", "torch", "torch"),
        ("onnx-int8", "onnx", "onnx"),
    ],
)
def test_query_backend(embed: str, query: str | None, expected: str) -> None:
    settings = Settings(embed_backend=embed, query_embed_backend=query)  # type: ignore[arg-type]
    assert query_backend(settings) == expected


def test_onnx_questions_are_torch_s_vectors(embedder: SentenceTransformerEmbedder) -> None:
    onnx = query_embedder_for(Settings())  # exported into the suite's ONNX_CACHE_DIR
    assert (onnx.backend, onnx.name, onnx.dim) == ("onnx", embedder.name, embedder.dim)
    ref = embedder.embed(QUESTIONS)
    for got in (onnx.embed(QUESTIONS), np.vstack([onnx.embed([q]) for q in QUESTIONS])):
        assert np.abs(got - ref).max() < 1e-5
    # and they rank passages as torch's do
    passages = embedder.embed([f"passage {i}: " + q for i, q in enumerate(QUESTIONS * 5)])
    for a, b in zip(ref, onnx.embed(QUESTIONS), strict=True):
        assert list(np.argsort(-(passages @ a))[:10]) == list(np.argsort(-(passages @ b))[:10])
    for q in QUESTIONS:
        assert onnx.count_tokens(q) == embedder.count_tokens(q)


def test_without_onnx_questions_embed_on_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(onnx_export, "ensure_onnx_model", broken)
    with caplog.at_level(logging.WARNING, logger="core.embedder"):
        emb = query_embedder_for(Settings(hearth_data_dir=tmp_path))
    assert emb.backend == "torch"
    assert "no exporter here" in caplog.text
    # asked for by name, it fails the start instead
    with pytest.raises(RuntimeError, match="no exporter here"):
        query_embedder_for(Settings(hearth_data_dir=tmp_path, query_embed_backend="onnx"))
