"""Prometheus metrics of one app: what the API measures as it serves (requests, chat latency,
tokens, retrieval, LLM errors) and what is read when scraped (queue depth, documents by status).

Each app has its own registry (not prometheus_client's global one), so tests that build many apps
do not share counts. The workers' totals (tasks, files, embedding calls) are kept in Redis by
workers.metrics and read at scrape time into `WorkerTotals`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from workers.metrics import EMBED_BUCKETS

from .llm import LLMError
from .middleware import StatusSeen

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # one label for requests no route saw, not one per path tried


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ("route", "method", "status")
        self.requests = Counter(
            "hearth_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels,
            registry=r,
        )
        self.request_seconds = Histogram(
            "hearth_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response (streams included).",
            labels,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.ttft = Histogram(
            "hearth_chat_time_to_first_token_seconds",
            "Time from a streamed chat turn's start to the first answer text sent.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.answer_seconds = Histogram(
            "hearth_chat_answer_duration_seconds",
            "Time from a chat turn's start to its whole answer, by streamed or not.",
            ("stream",),
            buckets=(0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.prompt_tokens = Counter(
            "hearth_chat_prompt_tokens",
            "Prompt tokens of answered chat turns, as the LLM backend reported them.",
            registry=r,
        )
        self.completion_tokens = Counter(
            "hearth_chat_completion_tokens",
            "Completion tokens of answered chat turns, as the LLM backend reported them.",
            registry=r,
        )
        self.retrieval_seconds = Histogram(
            "hearth_retrieval_duration_seconds",
            "Time to retrieve passages (query embedding and hybrid search), by caller.",
            ("caller",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.llm_errors = Counter(
            "hearth_llm_errors",
            "LLM backend failures answered to a chat client, by error code and HTTP status.",
            ("code", "status"),
            registry=r,
        )
        self.queue_depth = Gauge(
            "hearth_ingest_queue_depth",
            "Ingestion tasks waiting in a Celery queue (read from Redis when scraped).",
            ("queue",),
            registry=r,
        )
        self.documents = Gauge(
            "hearth_documents",
            "Documents by status (read from the database when scraped).",
            ("status",),
            registry=r,
        )

        self.workers = WorkerTotals()
        r.register(self.workers)

    def llm_error(self, exc: LLMError) -> None:
        self.llm_errors.labels(exc.code or "none", str(exc.status)).inc()

    def usage(self, usage: dict[str, Any]) -> None:
        """Count the tokens of a turn's `usage` (absent counts are not guessed)."""
        for key, counter in (
            ("prompt_tokens", self.prompt_tokens),
            ("completion_tokens", self.completion_tokens),
        ):
            n = usage.get(key)
            if isinstance(n, int) and n > 0:
                counter.inc(n)

    def retrieval(self, caller: str, started: float) -> None:
        self.retrieval_seconds.labels(caller).observe(time.perf_counter() - started)


class WorkerTotals(Collector):
    """The workers' counts as last read from Redis (all workers, all machines): exported as
    counters and a histogram, though this process only relays them."""

    def __init__(self) -> None:
        self.tasks: dict[str, int] = {}
        self.files: dict[str, int] = {}
        self.embed: dict[str, int] = {}

    def set(self, tasks: dict[str, int], files: dict[str, int], embed: dict[str, int]) -> None:
        self.tasks, self.files, self.embed = tasks, files, embed

    def collect(self) -> Iterator[Metric]:
        tasks = CounterMetricFamily(
            "hearth_worker_tasks",
            "Task runs finished by the workers, by task and final state (SUCCESS, FAILURE, RETRY).",
            labels=("task", "state"),
        )
        for field, n in sorted(self.tasks.items()):
            name, _, state = field.rpartition("|")
            tasks.add_metric((name, state), n)
        yield tasks
        files = CounterMetricFamily(
            "hearth_ingest_files",
            "Files the workers processed, by outcome (indexed, unchanged, failed, needs_ocr, ...).",
            labels=("outcome",),
        )
        for outcome, n in sorted(self.files.items()):
            files.add_metric((outcome,), n)
        yield files
        cumulative, buckets = 0, []
        for bound in (*map(str, EMBED_BUCKETS), "+Inf"):
            cumulative += self.embed.get(f"le:{bound}", 0)
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "hearth_embed_texts_per_call",
            "Texts per embedding call in the workers (one document's chunks; the model gets at"
            " most EMBED_BATCH_SIZE of them at a time).",
            buckets=buckets,
            sum_value=self.embed.get("sum", 0),
        )


class RequestMetrics:
    """Counts every HTTP request and times it to the end of its response, labelled by the
    template of the route that served it (`/v1/files/{file_id}`, never the raw path). Requests
    no route saw share the label `unmatched`: unknown paths, and those answered before routing
    (401 at the credentials gate, 413 over the size limit)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = StatusSeen(send)
        try:
            await self.app(scope, receive, seen)
        finally:
            path = getattr(scope.get("route"), "path", None)  # set by the router once matched
            method = scope.get("method", "")
            labels = (
                path if isinstance(path, str) and path else UNMATCHED,
                method if method in _METHODS else "other",
                str(seen.status),
            )
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_seconds.labels(*labels).observe(time.perf_counter() - started)
