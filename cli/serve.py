"""The API as each of `hearth serve-api`'s processes builds it: uvicorn imports this factory in
every worker process it starts (API_WORKERS), and each reads its settings from the environment
the parent passed on."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from core.logs import setup_logging
from core.offline import go_offline
from core.settings import get_settings


def create() -> FastAPI:
    settings = get_settings()
    setup_logging(fmt=settings.log_format)
    go_offline()
    return create_app(settings)
