"""The Celery app, built from Settings by the composition root (never at import)."""

from __future__ import annotations

from celery import Celery

from core.settings import Settings

INGEST_QUEUE = "ingest"  # bulk: the watcher and rescans
INTERACTIVE_QUEUE = "interactive"  # a person is waiting: uploads, `hearth ingest`
TASK_INGEST = "hearth.ingest_file"
TASK_INGEST_FILES = "hearth.ingest_files"  # several paths in one task: their chunks embed together
TASK_MOVE = "hearth.move_file"
TASK_RESCAN = "hearth.rescan"
TASK_PRUNE_LOG = "hearth.prune_request_log"


def create_celery(settings: Settings, broker_url: str | None = None) -> Celery:
    broker = broker_url or settings.redis_url
    if not broker:
        raise ValueError("REDIS_URL is not set (hearth up sets it for the embedded Redis)")
    app = Celery("hearth", broker=broker, include=["workers.tasks", "workers.metrics"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,  # a task is acknowledged after it ran: a killed worker loses nothing
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=INGEST_QUEUE,
        broker_connection_retry_on_startup=True,
        # a task a dead worker held is handed out again after this long; processing is
        # idempotent and locked per document, so an early re-delivery is harmless
        broker_transport_options={"visibility_timeout": settings.task_visibility_timeout_s},
        worker_hijack_root_logger=False,
        beat_schedule={
            "rescan": {
                "task": TASK_RESCAN,
                "schedule": settings.rescan_interval_hours * 3600.0,
            },
            "prune-request-log": {"task": TASK_PRUNE_LOG, "schedule": 3600.0},
        },
    )
    return app
