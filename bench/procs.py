"""Memory of the processes of a running `hearth up`, read from /proc: each part (api, workers,
beat, watcher, vLLM, Redis, PostgreSQL) with every process under it (Celery's pool children, the
parser child, vLLM's engine and workers, the Postgres backends)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

# `hearth up`'s children, told apart by their command lines (first match wins)
PARTS = (
    ("api", "serve-api"),
    ("worker", "worker --queues ingest"),
    ("worker-interactive", "worker --queues interactive"),
    ("beat", " beat"),
    ("watcher", " watch"),
    ("redis", "redis-server"),
    ("vllm", "vllm"),
)
PAGE_KB = 4


def _table() -> tuple[dict[int, int], dict[int, str], dict[int, float]]:
    """ppid, command line and RSS (MB) of every process we may read."""
    ppid, cmd, rss = {}, {}, {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            args = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            pages = int((d / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or a kernel thread
        pid = int(d.name)
        ppid[pid], cmd[pid], rss[pid] = int(stat[1]), args, pages * PAGE_KB / 1024
    return ppid, cmd, rss


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def postmaster_pid(pg_dir: Path) -> int | None:
    try:
        return int((pg_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def part_of(cmdline: str) -> str | None:
    for name, needle in PARTS:
        if needle in cmdline:
            return name
    return None


def hearth_rss(up_pid: int, pg_dir: Path) -> dict[str, dict[str, float]]:
    """{part: {"rss_mb": summed over its processes, "processes": n, "largest_mb": the biggest
    one's}}. Summed RSS counts pages shared between a part's processes more than once: a trend
    measure, not a budget."""
    ppid, cmd, rss = _table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, parent in ppid.items():
        children[parent].append(pid)
    roots: dict[str, list[int]] = defaultdict(list)
    for pid in children.get(up_pid, ()):
        name = part_of(cmd.get(pid, ""))
        if name:
            roots[name].append(pid)
    pm = postmaster_pid(pg_dir)
    if pm is not None and pm in rss:
        roots["postgres"].append(pm)
    out: dict[str, dict[str, float]] = {}
    for name, pids in roots.items():
        tree = [p for root in pids for p in _tree(root, children) if p in rss]
        out[name] = {
            "rss_mb": round(sum(rss[p] for p in tree), 1),
            "processes": len(tree),
            "largest_mb": round(max((rss[p] for p in tree), default=0.0), 1),  # which one grows
        }
    return out
