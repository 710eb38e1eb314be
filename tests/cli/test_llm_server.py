"""The local CPU LLM: the command line and environment it is started with, and (slow) a real vLLM
serving the converted SmolLM2 (HEARTH_TEST_LLM_DIR, made by `make llm-model`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.llm import ContextOverflow, LLMClient
from cli.llm_convert import COMPLETE_MARKER, LLMServerError, is_prepared, prepare_model
from cli.llm_server import LocalLLMServer, from_settings, process_group_alive
from core.settings import Settings
from tests.scripted_backends import fixture


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server(tmp_path: Path, **kwargs: object) -> LocalLLMServer:
    options: dict[str, object] = {
        "python": tmp_path / "venv" / "bin" / "python",
        "port": 8123,
        "cache_dir": tmp_path / "cache",
        "log_path": tmp_path / "llm" / "vllm.log",
        "served_model_name": "smollm2",
        "max_model_len": 2048,
        "base_env": {"PATH": "/usr/bin"},
    }
    options.update(kwargs)
    return LocalLLMServer(tmp_path / "model", **options)  # type: ignore[arg-type]


# fast: what would be started ------------------------------------------------------------------


def test_command_line(tmp_path: Path) -> None:
    server = _server(tmp_path)
    assert server.command() == [
        str(tmp_path / "venv" / "bin" / "python"),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tmp_path / "model"),
        "--served-model-name",
        "smollm2",
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
    ]
    assert server.base_url == "http://127.0.0.1:8123/v1"


@pytest.mark.parametrize(("cpus", "bind"), [(2, "0-1"), (8, "0-7"), (1, "0"), (None, "0")])
def test_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int | None, bind: str
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    env = _server(
        tmp_path, base_env={"PATH": "/usr/bin", "PYTHONPATH": "/ours", "HF_HUB_OFFLINE": "0"}
    ).environment()
    assert env["PATH"] == "/usr/bin"
    assert "PYTHONPATH" not in env  # our venv's path must not leak into vLLM's
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == bind
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the model in the engine's process
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "cache")
    assert env["VLLM_NO_USAGE_STATS"] == "1"


def test_environment_keeps_operator_tuning(tmp_path: Path) -> None:
    base = {
        "VLLM_CPU_KVCACHE_SPACE": "4",
        "VLLM_CPU_OMP_THREADS_BIND": "2-3",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
    }
    env = _server(tmp_path, base_env=base).environment()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "2-3"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"


def test_from_settings(tmp_path: Path) -> None:
    python = tmp_path / "venv-vllm" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        hearth_data_dir=tmp_path / "data",
        vllm_python=python,
        llm_local_model_dir=None,
        llm_local_port=8555,
        llm_model="tiny",
        llm_max_model_len=1024,
    )
    server = from_settings(settings)
    command = server.command()
    assert command[0] == str(python)
    assert command[command.index("--model") + 1] == str(tmp_path / "data" / "models" / "smollm2")
    assert command[command.index("--served-model-name") + 1] == "tiny"
    assert command[command.index("--max-model-len") + 1] == "1024"
    assert command[command.index("--port") + 1] == "8555"
    assert server.base_url == "http://127.0.0.1:8555/v1" == settings.llm_base_urls[0]
    assert server.environment()["VLLM_CACHE_ROOT"].startswith(str(tmp_path / "data" / "llm"))
    assert server.log_path.parent == tmp_path / "data" / "llm"


def test_from_settings_without_vllm_says_what_to_do(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, vllm_python=tmp_path / "nope" / "python")  # type: ignore[call-arg]
    with pytest.raises(LLMServerError, match="make run") as info:
        from_settings(settings)
    assert "LLM_BASE_URL" in str(info.value)


def test_prepare_model_returns_a_finished_conversion_at_once(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / COMPLETE_MARKER).write_text("{}")
    # the GGUF is not even looked at
    assert prepare_model(out, gguf_path=tmp_path / "missing.gguf") == out
    assert is_prepared(out)


def test_prepare_model_leaves_a_foreign_folder_alone(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(LLMServerError, match="not a complete model conversion"):
        prepare_model(out, gguf_path=gguf)
    assert (out / "notes.txt").read_text() == "mine"


def test_wait_ready_reports_an_early_death_with_the_log(tmp_path: Path) -> None:
    # our own venv has no vLLM: the child dies at once with an ImportError in its log
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    server = _server(tmp_path, python=Path(sys.executable), port=_free_port(), base_env=None)
    server.start()
    try:
        with pytest.raises(RuntimeError, match="No module named 'vllm'"):
            server.wait_ready(60)
    finally:
        server.stop()
    assert not server.is_running()


# slow: a real vLLM --------------------------------------------------------------------------


async def hearth_meets(base_url: str) -> tuple[int | None, httpx.Response, httpx.Response]:
    """The window Hearth's LLM client learns from the real server (given a fallback of 1024), and
    the server's refusal of a prompt longer than its window, which the client must read."""
    async with httpx.AsyncClient(timeout=120, trust_env=False) as http:
        llm = LLMClient(http, [base_url], "smollm2", fallback_window=1024)
        window = await llm.context_window()
        models = await http.get(base_url + "/models")
        long = [{"role": "user", "content": "How does the boiler work? " * 900}]
        refusal = await http.post(
            base_url + "/chat/completions",
            json={"model": "smollm2", "messages": long, "max_tokens": 16},
        )
        with pytest.raises(ContextOverflow) as caught:
            await llm.complete(long, max_tokens=16)
        assert caught.value.limit == 4096 and caught.value.prompt_tokens, caught.value.message
        assert llm.window() == 4096
    return window, models, refusal


def record_vllm(models: httpx.Response, refusal: httpx.Response) -> None:
    """Keep the real bodies beside the fixture the scripted vLLM speaks from, and compare them."""
    out = Path(__file__).resolve().parents[2] / "test-artifacts" / "backends"
    out.mkdir(parents=True, exist_ok=True)
    body = refusal.json()
    record = {"models": models.json(), "context_error": body}
    (out / "vllm.json").write_text(json.dumps(record, indent=2) + "\n")
    card, recorded_card = models.json()["data"][0], fixture("vllm")["models"]["body"]["data"][0]
    assert set(card) == set(recorded_card) and card["max_model_len"] == 4096, card
    recorded = fixture("vllm")["context_error"]["body"]["error"]
    assert {k: body["error"][k] for k in ("type", "param", "code")} == {
        k: recorded[k] for k in ("type", "param", "code")
    }
    template = re.escape(fixture("vllm")["context_error_template"])
    assert re.fullmatch(re.sub(r"\\\{\w+\\\}", r"\\d+", template), body["error"]["message"])


@pytest.mark.slow
def test_real_vllm_serves_chat_completions(tmp_path: Path) -> None:
    model_env = os.environ.get("HEARTH_TEST_LLM_DIR")
    if not model_env:
        pytest.skip("HEARTH_TEST_LLM_DIR is unset (`make test` sets it)")
    model_dir = prepare_model(Path(model_env))  # converts once if missing
    python = Settings(_env_file=None).vllm_python_path  # type: ignore[call-arg]
    if not python.exists():
        pytest.fail(f"no vLLM at {python}: run `make vllm` (or set VLLM_PYTHON)")

    server = LocalLLMServer(
        model_dir,
        python=python,
        port=_free_port(),
        cache_dir=tmp_path / "vllm-cache",
        log_path=tmp_path / "vllm.log",
        served_model_name="smollm2",
        max_model_len=4096,
    )
    server.start()
    pid = server.pid
    assert pid is not None
    try:
        ready_s = server.wait_ready(600)
        messages = [
            {"role": "system", "content": "Answer from the passage only."},
            {
                "role": "user",
                "content": "Passage: The Hearth library opened in 2019 and employs 42 people.\n\n"
                "Question: In which year did the library open?",
            },
        ]
        body = {"model": "smollm2", "messages": messages, "max_tokens": 48, "temperature": 0}
        with httpx.Client(base_url=server.base_url, timeout=120, trust_env=False) as client:
            started = time.monotonic()
            reply = client.post("/chat/completions", json=body)
            elapsed = time.monotonic() - started
            assert reply.status_code == 200, reply.text
            data = reply.json()
            answer = data["choices"][0]["message"]["content"]
            assert answer.strip()
            # the one near-certain fact: weights converted wrongly generate garbage instead
            assert "2019" in answer
            tokens = data["usage"]["completion_tokens"]

            lines = []
            with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = [line for line in r.iter_lines() if line.strip()]
        assert lines, "no SSE events"
        assert all(line.startswith("data: ") for line in lines), lines[:3]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        streamed = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert streamed.strip()
        print(
            f"\nvLLM ready in {ready_s:.1f} s; {tokens} tokens in {elapsed:.2f} s "
            f"({tokens / elapsed:.1f} tokens/s); answer {answer!r}; streamed {streamed!r}"
        )
        window, models, refusal = asyncio.run(hearth_meets(server.base_url))
        assert window == 4096  # its max_model_len, not the fallback Hearth was given
        assert refusal.status_code == 400, refusal.text
        record_vllm(models, refusal)
    finally:
        server.stop()
    assert not server.is_running()
    assert not process_group_alive(pid), "vLLM left processes behind"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
