"""What the workers count, kept in Redis so that every worker on every machine adds to one total:
tasks by name and final state, files by ingestion outcome, and the texts per embedding call.

A worker has no HTTP port to scrape (and its pool processes come and go), so the API's `/metrics`
reads these totals from Redis when scraped (api.routes.metrics). Counting must never fail a task:
a Redis error is logged and the count is lost.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
from celery.signals import task_postrun

from core.settings import redis_client_url

log = logging.getLogger(__name__)

TASKS_KEY = "hearth:metrics:tasks"  # field "<task name>|<state>" -> count
FILES_KEY = "hearth:metrics:files"  # field "<outcome>" -> count (indexed, failed, needs_ocr, ...)
EMBED_KEY = "hearth:metrics:embed"  # fields "le:<bound>" (per bucket, not cumulative), sum, count
# chunks per indexed document (once embedded in a call of their own; a batch task's documents
# now share calls of up to 256 texts, and the model sees EMBED_BATCH_SIZE at a time)
EMBED_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


def bucket(n: int) -> str:
    """The histogram bucket (upper bound) a call of `n` texts falls in."""
    return next((str(b) for b in EMBED_BUCKETS if n <= b), "+Inf")


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_client_url(url), socket_timeout=2, socket_connect_timeout=2)


def record(url: str, task: str, state: str, result: Any) -> None:
    """Count one finished task run, and what an ingest task's result (one file's, or a list of
    them from a batch task) says it did."""
    try:
        pipe = _client(url).pipeline(transaction=False)
        pipe.hincrby(TASKS_KEY, f"{task}|{state}", 1)
        for one in result if isinstance(result, list) else [result]:
            if not (isinstance(one, dict) and isinstance(one.get("status"), str)):
                continue
            pipe.hincrby(FILES_KEY, one["status"], 1)
            chunks = one.get("chunks")
            if one["status"] == "indexed" and isinstance(chunks, int) and chunks > 0:
                pipe.hincrby(EMBED_KEY, f"le:{bucket(chunks)}", 1)
                pipe.hincrby(EMBED_KEY, "sum", chunks)
                pipe.hincrby(EMBED_KEY, "count", 1)
        pipe.execute()
    except Exception as exc:  # counting never fails a task (nor floods its log with tracebacks)
        log.warning("could not count task %s in Redis: %s", task, exc)


@task_postrun.connect
def count_task(task: Any = None, retval: Any = None, state: str | None = None, **_: Any) -> None:
    from .tasks import context  # the worker's settings; not imported by the API's readers

    url = context().settings.redis_url
    if task is not None and state and url:
        record(url, str(task.name), state, retval)
