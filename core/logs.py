"""One logging set-up for every process Hearth starts: lines for people (`text`), or one JSON
object per line (`json`) for a log collector.

Every line carries the id of the request it belongs to: the API sets `request_id_var` for each
request (api.middleware.RequestId) and sends the id along with the Celery tasks the request
queues; a worker sets it again while it runs such a task (workers.tasks).
"""

from __future__ import annotations

import json
import logging
import os
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]

request_id_var: ContextVar[str | None] = ContextVar("hearth_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"


def current_request_id() -> str | None:
    """The id of the request (or task) being served here, or None outside one."""
    return request_id_var.get()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id]: message`; the id only inside a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        rid = request_id_var.get()
        record.request_tag = f" [{rid}]" if rid else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, request_id, and
    exc_info (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter_for(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def setup_logging(level: str | None = None, fmt: LogFormat = "text") -> None:
    """Log to stderr at HEARTH_LOG_LEVEL (INFO) in `fmt` (the LOG_FORMAT setting)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(fmt))
    chosen = (level or os.environ.get("HEARTH_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(level=chosen, handlers=[handler])
    if chosen != "DEBUG":
        # httpx says "HTTP Request: POST .../chat/completions 200" at INFO for every call to the
        # LLM backend: a second line per chat turn beside the access log, and its cost per turn
        logging.getLogger("httpx").setLevel(logging.WARNING)
