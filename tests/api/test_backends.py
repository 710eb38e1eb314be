"""The LLM client against backends as they are (tests/scripted_backends.py, speaking like vLLM,
llama.cpp's server, llama-cpp-python's server, Ollama and LM Studio, with their recorded bodies):
where each reports its context window, how each refuses a prompt as too long, streamed or not,
and health that tells a busy backend from a dead one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from api.backends import parse_overflow
from api.llm import LLMClient, LLMError
from tests.mock_llm import serve
from tests.scripted_backends import Scripted, fixture

LONG = [{"role": "user", "content": "How does the boiler work? " * 200}]  # ~1,200 tokens


def client(http: httpx.AsyncClient, backend: Scripted, **kw: Any) -> LLMClient:
    return LLMClient(http, [backend.url], backend.model, **kw)


@pytest.mark.parametrize(
    ("flavor", "options"),
    [
        ("vllm", {}),  # /v1/models max_model_len
        ("llama_cpp_server", {}),  # /v1/models meta.n_ctx, /props
        ("llama_cpp_server", {"older": True}),  # /props (its /v1/models has only n_ctx_train)
        ("ollama", {}),  # /api/show: num_ctx in the Modelfile's parameters
        ("ollama", {"num_ctx_in_modelfile": False}),  # /api/ps: the loaded model's context
        ("lmstudio", {}),  # /api/v0/models loaded_context_length
    ],
)
def test_the_window_each_backend_reports_is_learnt(flavor: str, options: dict[str, Any]) -> None:
    async def go(backend: Scripted) -> int | None:
        async with httpx.AsyncClient() as http:
            llm = client(http, backend)
            await llm.check_all()
            return llm.max_model_len

    with serve(Scripted(flavor, n_ctx=512, **options)) as backend:  # type: ignore[arg-type]
        assert asyncio.run(go(backend)) == 512, backend.hits


def test_a_window_that_is_only_a_bound_is_not_taken_for_the_served_one() -> None:
    """Ollama's model_info context_length and LM Studio's max_context_length are what the model
    was trained for, not what it is served with: they only cap the configured fallback."""

    async def go(backend: Scripted) -> int | None:
        async with httpx.AsyncClient() as http:
            llm = client(http, backend)
            await llm.check_all()
            return llm.max_model_len

    for flavor in ("ollama", "lmstudio"):
        quiet = Scripted(flavor, n_ctx=512, num_ctx_in_modelfile=False, loaded=False)
        with serve(quiet) as backend:  # type: ignore[arg-type]
            assert asyncio.run(go(backend)) in (None, 8192), flavor


@pytest.mark.parametrize("flavor", ["vllm", "llama_cpp_server", "llama_cpp_python", "lmstudio"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_refusal_for_length_is_read_and_remembered(flavor: str, stream: bool) -> None:
    """The caller gets the backend's own words with a 400, streamed or not (llama-cpp-python's
    streamed refusal is an empty stream: the client asks again without streaming to learn why),
    and the limit the backend named is remembered for it."""

    async def go(backend: Scripted) -> tuple[LLMError, int | None]:
        async with httpx.AsyncClient() as http:
            llm = client(http, backend)
            with pytest.raises(LLMError) as caught:
                if stream:
                    async for _ in llm.stream(LONG, max_tokens=64):
                        pass
                else:
                    await llm.complete(LONG, max_tokens=64)
            return caught.value, llm.max_model_len

    with serve(Scripted(flavor, n_ctx=512)) as backend:  # type: ignore[arg-type]
        exc, remembered = asyncio.run(go(backend))
    assert (exc.status, exc.code) == (400, "context_length_exceeded"), exc.message
    assert "512" in exc.message, exc.message
    assert remembered == 512


def test_an_error_event_mid_stream_reaches_the_caller_in_the_backends_words() -> None:
    async def go(backend: Scripted) -> tuple[list[dict[str, Any]], LLMError]:
        got: list[dict[str, Any]] = []
        async with httpx.AsyncClient() as http:
            llm = client(http, backend)
            with pytest.raises(LLMError) as caught:
                async for chunk in llm.stream([{"role": "user", "content": "hi"}]):
                    got.append(chunk)
            return got, caught.value

    with serve(Scripted("llama_cpp_server", n_ctx=4096, fail_mid_stream=True)) as backend:  # type: ignore[arg-type]
        chunks, exc = asyncio.run(go(backend))
    assert any(c["choices"][0]["delta"].get("content") for c in chunks)  # the text before it
    assert exc.status == 502 and "Compute error." in exc.message, exc.message


def test_a_backend_busy_streaming_an_answer_stays_in_rotation() -> None:
    """llama-cpp-python's one lock makes GET /v1/models wait while it generates: the health probe
    times out, but the backend is streaming tokens, so it is alive."""

    async def go(backend: Scripted) -> tuple[str, list[bool]]:
        async with httpx.AsyncClient() as http:
            llm = client(http, backend, probe_timeout_s=0.5)
            seen: list[bool] = []

            async def probe_meanwhile() -> None:
                while not backend.requests:  # the answer has started
                    await asyncio.sleep(0.01)
                await llm.check_all()  # times out: the backend is busy
                seen.append(llm.backends[0].healthy)

            prober = asyncio.create_task(probe_meanwhile())
            text = ""
            async for chunk in llm.stream([{"role": "user", "content": "hi"}]):
                for choice in chunk.get("choices") or []:
                    text += (choice.get("delta") or {}).get("content") or ""
            await prober
            seen.append(llm.backends[0].healthy)
            return text, seen

    # 15 words, one every 0.1 s: the answer outlasts the probe's 0.5 s timeout
    reply = " ".join(f"w{i}" for i in range(15))
    with serve(Scripted("llama_cpp_python", n_ctx=4096, reply=reply, delay_s=0.1)) as backend:  # type: ignore[arg-type]
        text, healthy = asyncio.run(go(backend))
    assert text == reply
    assert healthy == [True, True]


def test_an_answer_the_backend_cuts_short_is_not_taken_for_a_whole_one() -> None:
    """llama-cpp-python ends the answer it streams with a bare [DONE] when another request
    arrives (here another client's): the caller gets what was said, then a 502 that says so."""

    async def go(backend: Scripted) -> tuple[str, LLMError | None]:
        text, error = "", None
        async with httpx.AsyncClient() as http:
            llm = client(http, backend)

            async def another_client() -> None:
                while not backend.requests:
                    await asyncio.sleep(0.01)
                async with httpx.AsyncClient() as other:
                    await other.get(backend.url + "/models", timeout=30)

            meanwhile = asyncio.create_task(another_client())
            try:
                async for chunk in llm.stream([{"role": "user", "content": "hi"}]):
                    for choice in chunk.get("choices") or []:
                        text += (choice.get("delta") or {}).get("content") or ""
            except LLMError as exc:
                error = exc
            await meanwhile
        return text, error

    reply = " ".join(f"w{i}" for i in range(40))
    with serve(Scripted("llama_cpp_python", n_ctx=4096, reply=reply, delay_s=0.1)) as backend:  # type: ignore[arg-type]
        text, error = asyncio.run(go(backend))
    assert backend.interrupted == 1
    assert reply.startswith(text) and text != reply
    assert error is not None and error.status == 502 and "before finishing" in error.message


def test_a_long_unstreamed_answer_keeps_its_backend_in_rotation_and_its_window() -> None:
    """A non-streamed answer sends nothing until it is done, for longer than a stream may be
    silent (here 1 s): within its deadline the backend is busy, not dead, and what Hearth
    learnt of it (its window) stays."""

    async def go(backend: Scripted) -> tuple[list[bool], int | None]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as http:
            llm = client(http, backend, probe_timeout_s=0.5)
            llm.learn(llm.backends[0], 512)  # as from a refusal
            answer = asyncio.create_task(
                llm.complete([{"role": "user", "content": "hi"}], max_tokens=16)
            )
            seen = []
            while not answer.done():
                await llm.check_all()
                seen.append(llm.backends[0].healthy)
                await asyncio.sleep(0.05)
            await answer
            return seen, llm.max_model_len

    slow = Scripted("llama_cpp_python", n_ctx=4096, complete_delay_s=3)
    with serve(slow) as backend:  # type: ignore[arg-type]
        seen, window = asyncio.run(go(backend))
    assert seen and all(seen), seen
    assert window == 512


def test_a_frozen_backend_with_nothing_in_flight_goes_out_of_rotation() -> None:
    async def go(backend: Scripted) -> bool:
        async with httpx.AsyncClient() as http:
            llm = client(http, backend, probe_timeout_s=0.5)
            await llm.check_all()
            return llm.backends[0].healthy

    with serve(Scripted("vllm", models_delay_s=30)) as backend:  # type: ignore[arg-type]
        assert asyncio.run(go(backend)) is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (fixture("vllm")["context_error"]["body"], (4096, 4097)),
        ({"error": {"message": fixture("vllm")["older_context_errors"][0]}}, (4096, 4711)),
        (fixture("llama_cpp_python")["context_error"]["body"], (512, 1231)),
        (fixture("llama_cpp_server")["context_error"]["body"], (512, 600)),
        (fixture("lmstudio")["context_error"]["body"], (512, 600)),
        (fixture("ollama")["context_error"]["body"], (None, None)),
        ({"error": {"message": fixture("vllm")["older_context_errors"][1]}}, (2048, 1588)),
        ({"error": {"message": fixture("vllm")["older_context_errors"][2]}}, (4096, None)),
        ({"error": fixture("lmstudio")["older_context_errors"][0]}, (7866, 10136)),
        ({"error": fixture("lmstudio")["older_context_errors"][1]}, (None, None)),
        # vLLM before its errors had an "error" object: the fields at the top
        (
            {
                "object": "error",
                "message": "This model's maximum context length is 2048 tokens. "
                "However, you requested 2100 tokens (1588 in the messages, 512 in the completion).",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            (2048, 1588),
        ),
    ],
)
def test_each_backends_refusal_is_read(body: dict[str, Any], expected: tuple[Any, Any]) -> None:
    found = parse_overflow(400, body)
    assert found is not None and (found.limit, found.prompt_tokens) == expected


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": {"message": "temperature must be between 0 and 2", "type": "x"}}),
        (500, fixture("llama_cpp_server")["context_error"]["body"]),  # not a refusal: a fault
        (400, {"detail": "Not Found"}),
    ],
)
def test_other_errors_are_not_taken_for_refusals(status: int, body: dict[str, Any]) -> None:
    assert parse_overflow(status, body) is None
