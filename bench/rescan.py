"""How long `ingest.sync.reconcile` takes to rescan a big tree that has not changed."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.corpus import make_small_files


def run_rescan(conn: Any, folder: Path, n_files: int, repeats: int) -> dict[str, Any]:
    """Rescan of a tree already in the index. Its rows are written straight through
    `retrieval.documents.set_status` (status indexed, real size/mtime/hash), not by ingesting."""
    from core.settings import WatchRoot
    from ingest.hashing import file_sha256
    from ingest.sync import reconcile, walk
    from retrieval import documents

    make_small_files(folder, n_files)
    root = folder.resolve()
    start = time.perf_counter()
    for p in walk(root):
        st = p.stat()
        documents.set_status(
            conn,
            str(p),
            "indexed",
            size=st.st_size,
            mtime=st.st_mtime,
            content_hash=file_sha256(p),
            chunk_count=1,
        )
    conn.commit()
    seeded = time.perf_counter() - start
    runs, plan = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        plan = reconcile(conn, [WatchRoot(root, "default")])
        runs.append(time.perf_counter() - start)
    assert plan is not None
    median = statistics.median(runs)
    return {
        "files": n_files,
        "seconds": median,
        "runs": runs,
        "us_per_file": median / n_files * 1e6,
        "planned_ingest": len(plan.to_ingest),
        "planned_delete": len(plan.to_delete),
        "planned_moves": len(plan.moves),
        "unchanged": plan.unchanged,
        "seed_seconds": seeded,
        "seeded_with": "retrieval.documents.set_status (rows written directly, not ingested)",
    }
