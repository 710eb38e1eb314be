"""Exporting the embedding model to ONNX (fp32, and int8 by dynamic quantisation), once, offline.

The exported graph is the whole sentence-transformers pipeline (transformer, pooling, normalise),
so serving it needs only a tokenizer and ONNX Runtime, not torch. Exports go to a cache folder,
keyed by a fingerprint of the model's files, and appear there atomically (temp folder + rename),
so concurrent workers never load a half-written file.

Not `SentenceTransformer(path, backend="onnx")`: that needs `optimum-onnx`, whose only release
pins transformers<4.58, while sentence-transformers 6 needs transformers>=5.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from core.filelock import exclusive_file_lock

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = 17
# bump when the export or quantisation recipe changes, so cached files are rebuilt
EXPORT_VERSION = 1
_SAMPLE = ["Hearth exports this model once.", "A second, longer sentence pads the first one out."]


def onnx_cache_dir(exports: Path, spec: str) -> Path:
    """Where exports of the model `spec` (a folder or a package) are kept: a folder of its own
    in `exports` (Settings.onnx_exports: ONNX_CACHE_DIR, or <HEARTH_DATA_DIR>/models/onnx)."""
    return exports / Path(spec).expanduser().name


def fingerprint(model_dir: Path) -> str:
    """A short hash of the model's files (names, sizes, mtimes) and of the export recipe."""
    h = hashlib.sha256(f"v{EXPORT_VERSION} opset{OPSET}".encode())
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir)
        skip = any(part.startswith(".") or part == "__pycache__" for part in rel.parts)
        if p.is_file() and not skip:
            st = p.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def ensure_onnx_model(model_dir: Path, cache_dir: Path, *, int8: bool = False) -> Path:
    """The cached ONNX file for this model (int8 or fp32), exporting it first if it is missing."""
    variant = "int8" if int8 else "fp32"
    target = cache_dir / f"{variant}-{fingerprint(model_dir)}"
    if (target / ONNX_FILE).is_file():
        return target / ONNX_FILE
    source = ensure_onnx_model(model_dir, cache_dir, int8=False) if int8 else None
    cache_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_file_lock(cache_dir / ".lock"):  # one exporter at a time
        if (target / ONNX_FILE).is_file():  # another process exported it while we waited
            return target / ONNX_FILE
        # an export cut short (the process killed) left its folder; under the lock none is live
        for dead in cache_dir.glob(f".{variant}-*"):
            shutil.rmtree(dead, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{variant}-", dir=cache_dir))
        try:
            started = time.monotonic()
            if source is None:
                _export_fp32(model_dir, tmp / ONNX_FILE)
            else:
                _quantize_int8(source, tmp / ONNX_FILE)
            manifest = {
                "source": str(model_dir),
                "variant": variant,
                "fingerprint": target.name.split("-", 1)[1],
                "export_version": EXPORT_VERSION,
                "opset": OPSET,
                "seconds": round(time.monotonic() - started, 2),
            }
            (tmp / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.chmod(0o755)  # mkdtemp's 0700 would keep the export from other local users
            shutil.rmtree(target, ignore_errors=True)  # an incomplete folder from elsewhere
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("exported %s model of %s in %.1f s", variant, model_dir, manifest["seconds"])
        _remove_stale(cache_dir, variant, keep=target)
        _remove_flat_layout(cache_dir.parent, variant)
    return target / ONNX_FILE


def _remove_stale(cache_dir: Path, variant: str, keep: Path) -> None:
    """Exports of older versions of the model; a process still using one has it in memory."""
    for old in cache_dir.glob(f"{variant}-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def _remove_flat_layout(exports: Path, variant: str) -> None:
    """Exports kept straight in the exports folder, as they were before each model had a folder of
    its own: nothing reads them any more (~110 MB for MiniLM's two)."""
    for old in exports.glob(f"{variant}-*"):
        if (old / "export.json").is_file() and (old / ONNX_FILE).is_file():
            shutil.rmtree(old, ignore_errors=True)


def _export_fp32(model_dir: Path, out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    # eager attention traces to plain MatMul/Softmax, which ONNX Runtime fuses and quantises;
    # the SDPA graph runs slower there
    model = SentenceTransformer(
        str(model_dir),
        device="cpu",
        local_files_only=True,
        model_kwargs={"attn_implementation": "eager"},
    ).eval()
    features = model.preprocess(_SAMPLE)
    names = [k for k, v in features.items() if isinstance(v, torch.Tensor)]
    constants = {k: v for k, v in features.items() if k not in names}

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            out = self.model({**constants, **dict(zip(names, tensors, strict=True))})
            embedding: torch.Tensor = out["sentence_embedding"]
            return embedding

    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (dynamo=True would need onnxscript) says it is legacy, and
        # tracing flags Python conditionals on shapes in transformers' masking and the pooling
        # code; with a padded sample they take the general branch. Tests compare the graph with
        # torch on other batch sizes and lengths.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
        torch.onnx.export(
            Pipeline().eval(),
            tuple(features[k] for k in names),
            str(out),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _quantize_int8(source: Path, out: Path) -> None:
    """Dynamic int8 quantisation, per output channel: per-tensor scales cost MiniLM ~0.1 cosine."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's quantiser logs through the root logger, which configures logging for the
    # whole process when nothing has yet; keep the root logger as it was
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.setLevel(logging.WARNING)
    try:
        prepared = out.with_name("prepared.onnx")
        # symbolic shape inference cannot follow this graph; ONNX's own shape inference can
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True)
        prepared.unlink()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
