"""End to end: `hearth up` on embedded defaults (Postgres, Redis, a Celery worker process, the
CPU vLLM server, uvicorn), files dropped into the watched folder, questions through the official
`openai` client."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.factories import heat_pump_pdf

from .stack import Stack, start_stack

pytestmark = pytest.mark.slow

SOLAR_MD = """# Birchwood Lodge

## Solar array

The rooftop solar array at Birchwood Lodge was installed in 2019.
It produces 7.2 kilowatts at peak and feeds a battery in the cellar.
"""


@pytest.fixture(scope="module")
def indexed(stack: Stack) -> Stack:
    stack.watch_dir.mkdir(parents=True, exist_ok=True)
    (stack.watch_dir / "solar.md").write_text(SOLAR_MD)
    heat_pump_pdf(stack.watch_dir / "pump.pdf")
    for name in ("solar.md", "pump.pdf"):  # other modules may add files to the same stack
        stack.wait_for_file(name)
    return stack


def oai(stack: Stack, key: str | None = None) -> openai.OpenAI:
    """An official client, used in a `with` block so its connections are closed."""
    return openai.OpenAI(
        base_url=stack.api + "/v1", api_key=key or stack.token or "", max_retries=0, timeout=300
    )


def source_paths(sources: list[dict]) -> set[str]:  # type: ignore[type-arg]
    return {Path(s["path"]).name for s in sources}


def test_first_start_prints_an_admin_token(stack: Stack) -> None:
    assert stack.token and stack.token.startswith("hearth_")


def test_health_reports_every_part(stack: Stack, client_http: httpx.Client) -> None:
    assert client_http.get("/health").json() == {"status": "ok"}  # liveness: no checks
    r = client_http.get("/ready")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "llm": "ok", "migrations": "ok"},
    }


def test_models_lists_rag_and_backend_models(indexed: Stack) -> None:
    with oai(indexed) as client:
        ids = {m.id for m in client.models.list().data}
    assert ids >= {"hearth", "smollm2"}


def test_non_stream_answer_cites_the_markdown_file(indexed: Stack) -> None:
    with oai(indexed) as client:
        resp = client.chat.completions.create(
            model="hearth",
            messages=[{"role": "user", "content": "When was the rooftop solar array installed?"}],
            max_tokens=80,
            temperature=0,
        )
    extra = resp.model_extra or {}
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content
    assert "solar.md" in source_paths(extra["sources"]), (resp.choices[0].message.content, extra)
    src = next(s for s in extra["sources"] if s["path"].endswith("solar.md"))
    assert "2019" in src["snippet"]
    assert extra["conversation_id"]


def test_stream_answer_cites_the_pdf_with_its_page(indexed: Stack) -> None:
    with oai(indexed) as client:
        chunks = list(
            client.chat.completions.create(
                model="hearth",
                messages=[
                    {"role": "user", "content": "How often must the heat pump filter be cleaned?"}
                ],
                max_tokens=80,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    sources = (final.model_extra or {})["sources"]
    assert text.strip()
    assert "pump.pdf" in source_paths(sources), (text, sources)
    pdf = next(s for s in sources if s["path"].endswith("pump.pdf"))
    assert pdf["page"] in (1, 2)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_conversation_id_continues_a_thread(indexed: Stack, client_http: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {indexed.token}", "X-Hearth-Footer": "off"}
    body = {
        "model": "hearth",
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "What does the solar array feed?"}],
    }
    first = client_http.post("/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == 200, first.text
    cid = first.headers["X-Conversation-Id"]
    assert "Sources:" not in first.json()["choices"][0]["message"]["content"]
    again = client_http.post(
        "/v1/chat/completions", json=body, headers={**headers, "X-Conversation-Id": cid}
    )
    assert again.headers["X-Conversation-Id"] == cid


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer hearth_wrong"}, {"Authorization": "Basic abc"}]
)
def test_missing_or_wrong_token_is_401_json(
    stack: Stack, client_http: httpx.Client, headers: dict[str, str]
) -> None:
    r = client_http.post(
        "/v1/chat/completions",
        headers=headers,
        json={"model": "hearth", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["type"] == "authentication_error" and err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_openai_client_raises_authentication_error(stack: Stack) -> None:
    with (
        oai(stack, key="hearth_not_a_real_token") as client,
        pytest.raises(openai.AuthenticationError) as exc,
    ):
        client.models.list()
    assert exc.value.status_code == 401


def test_unknown_model_is_404(indexed: Stack) -> None:
    with oai(indexed) as client, pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])


def test_deleting_a_file_removes_it_from_answers(indexed: Stack) -> None:
    extra_file = indexed.watch_dir / "temporary.md"
    extra_file.write_text("# Temporary\n\nThe spare key hides under the blue flowerpot.\n")
    indexed.wait_for_file("temporary.md")
    extra_file.unlink()
    indexed.wait_for_file("temporary.md", ("deleted", "missing"), timeout_s=120)
    out = indexed.hearth("search", "spare key blue flowerpot", "-k", "10")
    assert out.returncode == 0, out.stderr
    assert "temporary.md" not in out.stdout


def test_shutdown_is_clean_and_a_restart_keeps_everything(indexed: Stack, stack_dir: Path) -> None:
    token = indexed.token
    before = indexed.status()["documents"]["indexed"]["count"]
    assert indexed.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(indexed.api + "/health", timeout=2)
    port = int(indexed.api.rsplit(":", 1)[1])
    again = start_stack(indexed.data_dir, indexed.log, port=port)
    # the session's stack is now the restarted one, so later tests keep using it
    indexed.proc, indexed.env = again.proc, again.env
    assert again.token is None  # the admin exists; no second token is printed
    assert again.status()["documents"]["indexed"]["count"] == before >= 2
    r = httpx.get(again.api + "/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
