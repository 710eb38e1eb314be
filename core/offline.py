"""Keep third-party libraries from reaching the internet. Call before importing them."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",  # unstructured's analytics ping
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "HF_HUB_OFFLINE": "1",  # models come from disk only
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def go_offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
