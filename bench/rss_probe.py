"""Memory of a worker-like process per embedding backend, in a fresh process each, so backends do
not share memory: the model loaded and used on a full-length batch, then a file of each kind
parsed (in a `ParserProcess` child, as the worker does), chunked and embedded. Also the child's
memory, and the main process's after parsing in-process too (`unstructured` imports spaCy, thinc,
and so torch, whatever the backend).

`bench.ingest` runs it as `python -m bench.rss_probe [--no-inline] MODEL BACKEND BATCH CACHE_DIR
FILE...` and reads the JSON line it prints; `--no-inline` (its --quick) leaves out the in-process
parsing pass (a second import of every parser, the larger part of a probe's time).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _status_mb(field: str, pid: int | str = "self") -> float:
    """VmRSS (now) or VmHWM (peak) of a process; unlike ru_maxrss, VmHWM starts afresh at exec
    instead of inheriting the parent's peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def probe(
    model: str,
    backend: str,
    batch_size: int,
    cache_dir: Path,
    files: list[Path],
    *,
    inline: bool = True,
) -> dict[str, Any]:
    from core.offline import go_offline

    go_offline()
    from bench.corpus import paragraph
    from core.embedder import load_embedder
    from ingest.chunking import chunk_elements
    from ingest.isolate import ParserProcess
    from ingest.parse import parse_file
    from ingest.pipeline import IngestOptions

    base = _status_mb("VmRSS")
    embedder = load_embedder(model, batch_size, backend=backend, cache_dir=cache_dir)
    loaded = _status_mb("VmRSS")
    rng = random.Random(1)
    embedder.embed([paragraph(rng) * 3 for _ in range(batch_size)])  # a full-length batch
    out: dict[str, Any] = {
        "backend": backend,
        "imports_mb": base,
        "model_load_mb": round(loaded - base, 1),
        "model_only_rss_mb": _status_mb("VmRSS"),
    }
    opts = IngestOptions()

    def ingest_like(parse: Callable[[Path], Any]) -> None:
        for f in files:
            parsed = parse(f)
            chunks = chunk_elements(
                parsed.elements,
                title=parsed.title,
                count_tokens=embedder.count_tokens,
                chunk_size=opts.chunk_size,
                overlap=opts.chunk_overlap,
            )
            embedder.embed([c.embed_text for c in chunks])

    with ParserProcess() as parser:
        ingest_like(parser.parse)
        assert parser.pid is not None
        child = {
            "rss_mb": _status_mb("VmRSS", parser.pid),
            "peak_rss_mb": _status_mb("VmHWM", parser.pid),
        }
    out.update(
        rss_mb=_status_mb("VmRSS"),
        peak_rss_mb=_status_mb("VmHWM"),
        torch_imported="torch" in sys.modules,
        parse_child=child,
    )
    out["inline_parsing"] = None
    if inline:
        ingest_like(parse_file)
        out["inline_parsing"] = {
            "rss_mb": _status_mb("VmRSS"),
            "peak_rss_mb": _status_mb("VmHWM"),
            "torch_imported": "torch" in sys.modules,
        }
    return out


def main(argv: list[str]) -> int:
    inline = "--no-inline" not in argv  # --quick: the parsers are imported once, in the child
    model, backend, batch, cache, *files = [a for a in argv if a != "--no-inline"]
    paths = [Path(f) for f in files]
    print(json.dumps(probe(model, backend, int(batch), Path(cache), paths, inline=inline)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
