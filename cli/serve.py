"""The API as each of `hearth serve-api`'s processes builds it: uvicorn imports this factory in
every worker process it starts (API_WORKERS), and each reads its settings from the environment
the parent passed on."""

from __future__ import annotations

import os

from fastapi import FastAPI

from api.app import create_app
from core.embedder import limit_threads
from core.logs import setup_logging
from core.offline import go_offline
from core.settings import Settings, get_settings


def cpu_count() -> int:
    """The cores this process may run on (its affinity, where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def api_processes(settings: Settings) -> int:
    """API_WORKERS, or one process per core."""
    return settings.api_workers or cpu_count()


def share_cores(settings: Settings) -> int:
    """Each API process embeds queries on its share of the cores (one thread when there is a
    process per core, the default), so that the processes' torch threads together are no more
    than the cores; OMP_NUM_THREADS, when set, decides instead. Returns the threads."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    threads = int(given) if given.isdigit() and int(given) > 0 else None
    threads = threads or max(1, cpu_count() // api_processes(settings))
    limit_threads(threads)
    return threads


def create() -> FastAPI:
    settings = get_settings()
    setup_logging(fmt=settings.log_format)
    go_offline()
    share_cores(settings)  # before the embedder loads torch
    return create_app(settings)
