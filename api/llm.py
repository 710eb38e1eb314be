"""The LLM client: OpenAI's chat-completions protocol over one shared httpx client.

Only that protocol is relied on for answers, so any OpenAI-compatible backend works; what each
says about itself (its context window, its refusals for length) is read the way it says it
(api.backends). Several base URLs are used round-robin. A backend that refuses connections or
answers 502/503 is taken out of the rotation until a health probe (GET /models) finds it serving
again; one that is busy answering is alive, even when a probe times out (llama-cpp-python answers
nothing else while it generates). Nothing is asked of a backend before the first use: a process
that never chats (`hearth eval`) never probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx

from .backends import Overflow, Window, discover, error_fields, parse_overflow
from .sse import Block, BrokenEvent, ErrorEvent, Scanner, parse

log = logging.getLogger(__name__)

# A non-streamed answer's deadline: LLM_TIMEOUT_S (queue, prompt, first token) plus its token
# budget at the backend's speed, with room for a slower moment, at most LLM_DEADLINE_MAX_S.
# Before a backend has been measured its speed is taken to be that of a small CPU model under load.
DEFAULT_TOKENS_PER_S = 2.0
SPEED_MARGIN = 1.5
SPEED_EWMA = 0.3  # weight of the newest measurement
MIN_MEASURED_TOKENS = 8  # shorter answers say more about the prompt than about the speed


class LLMError(Exception):
    """The backend failed; `status` is what Hearth answers with (400, 502, 503 or 504)."""

    def __init__(self, status: int, message: str, code: str | None = "llm_backend_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class ContextOverflow(LLMError):
    """A backend refused the prompt as too long; `limit` and `prompt_tokens` are the numbers it
    named (in its own tokens), when it named them."""

    def __init__(self, message: str, backend: Backend, overflow: Overflow) -> None:
        super().__init__(
            400,
            f"the request does not fit the model's context window: {message}",
            "context_length_exceeded",
        )
        self.backend, self.limit, self.prompt_tokens = (
            backend,
            overflow.limit,
            overflow.prompt_tokens,
        )
        self.exact = overflow.exact  # prompt_tokens is the prompt's size, not a lower bound


@dataclass
class Backend:
    url: str
    healthy: bool = True
    down_since: float | None = None
    reported: Window | None = None  # what the backend says of its window (api.backends)
    learnt: int | None = None  # the limit it named when it refused a prompt as too long
    ratio: float = 1.0  # its tokens per token Hearth counts, as a refusal showed
    calibrated: bool = False  # `ratio` comes from a refusal
    discovered: bool = False
    in_flight: int = 0  # chat requests sent and not yet finished
    last_progress: float | None = None  # when a chat request last got bytes (or was sent)
    quiet_until: float = 0.0  # a non-streamed answer in flight may send nothing until then
    gone: bool = False  # it was out of rotation for refusing connections (maybe restarted)
    tokens_per_s: float | None = None  # generation speed: EWMA over real completions
    models: list[dict[str, Any]] = field(default_factory=list)  # its last model list
    probing: asyncio.Future[list[dict[str, Any]]] | None = field(default=None, repr=False)
    # parsed once: httpx parses and percent-checks a URL given as a string at every request
    chat_url: httpx.URL = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.chat_url = httpx.URL(self.url + "/chat/completions")

    def window(self, fallback: int | None) -> int | None:
        """The window Hearth uses for this backend, in its tokens: the one it reported or named
        in a refusal, else `fallback` (LLM_MAX_MODEL_LEN) within any bound it reported."""
        reported = self.reported.tokens if self.reported else None
        if self.learnt or (self.reported and self.reported.exact):
            return min(n for n in (self.learnt, reported) if n)
        known = [n for n in (reported, fallback) if n]
        return min(known) if known else None

    def mark_down(self, why: str, *, gone: bool = False) -> None:
        """Out of rotation; `gone`: it refused the connection (the process may be restarted,
        perhaps with another window)."""
        if self.healthy:
            log.warning("LLM backend %s taken out of rotation: %s", self.url, why)
        self.healthy, self.down_since = False, self.down_since or time.monotonic()
        self.gone = self.gone or gone

    def mark_up(self) -> None:
        if not self.healthy:
            log.info("LLM backend %s is back in rotation", self.url)
        if self.gone:  # a new process, maybe with another window: ask again
            self.discovered, self.learnt = False, None
            self.ratio, self.calibrated, self.gone = 1.0, False, False
        self.healthy, self.down_since = True, None


class LLMClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        base_urls: list[str],
        model: str,
        api_key: str | None = None,
        *,
        fallback_window: int | None = None,
        health_interval_s: float | None = None,
        probe_timeout_s: float = 5.0,
        deadline_max_s: float = 900.0,
    ) -> None:
        """`fallback_window`: LLM_MAX_MODEL_LEN, for a backend that does not say its window;
        `health_interval_s`: probe the backends this often, from the first use on;
        `deadline_max_s`: LLM_DEADLINE_MAX_S, the longest a non-streamed answer is waited for."""
        if not base_urls:
            raise ValueError("at least one LLM base URL is required")
        self.http = http
        self.backends = [Backend(u.rstrip("/")) for u in base_urls]
        self.model = model
        self.fallback_window = fallback_window
        self.health_interval_s = health_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.deadline_max_s = deadline_max_s
        self._turn = 0  # round-robin position
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._health: asyncio.Task[None] | None = None
        # a request with no byte for this long fails on its own read timeout: until then a
        # backend working on one is busy, not dead
        read = http.timeout.read if isinstance(http.timeout, httpx.Timeout) else None
        self.stall_s = float(read or 120.0)

    # --- choosing a backend ------------------------------------------------------------------
    def _order(self) -> list[Backend]:
        """Healthy backends in round-robin order, then the ones out of rotation (a last resort:
        one may have come back since its last probe)."""
        healthy = [b for b in self.backends if b.healthy]
        down = [b for b in self.backends if not b.healthy]
        if healthy:
            k = self._turn % len(healthy)
            healthy = healthy[k:] + healthy[:k]
        self._turn += 1
        return healthy + down

    # --- context window ------------------------------------------------------------------------
    @property
    def max_model_len(self) -> int | None:
        """The smallest context window of the backends, in their tokens (requests may go to any
        of them); None when none has said and no fallback is set."""
        known = [w for b in self.backends if (w := b.window(self.fallback_window))]
        return min(known) if known else None

    def window(self) -> int | None:
        """The window to fit prompts into, in the tokens Hearth counts: each backend's, shrunk
        by the ratio its refusals showed, the smallest of them."""
        known = [int(w / b.ratio) for b in self.backends if (w := b.window(self.fallback_window))]
        return min(known) if known else None

    async def context_window(self) -> int | None:
        """`window()`, after asking the backends that have not said yet (once each)."""
        self._wake()
        pending = [b for b in self.backends if b.healthy and not b.discovered]
        if pending:
            await asyncio.gather(*(self.probe(b) for b in pending), return_exceptions=True)
        return self.window()

    def learn(self, backend: Backend, limit: int | None, ratio: float | None = None) -> None:
        """Remember what `backend` showed when it refused a prompt as too long: the `limit` it
        named, and how many of its tokens one token Hearth counts is. The first `ratio` is taken
        as it is (Hearth's estimate may count high: then more fits than it thought); a later
        refusal can only raise it."""
        if limit and (backend.learnt is None or limit < backend.learnt):
            log.info("LLM backend %s: context window %d (from its refusal)", backend.url, limit)
            backend.learnt = limit
        if ratio:
            backend.ratio = max(backend.ratio, ratio) if backend.calibrated else ratio
            backend.calibrated = True

    async def rediscover(self, backend: Backend) -> None:
        """Ask `backend` for its window again (Ollama and LM Studio say it once a model is
        loaded, which a refused request may have done)."""
        backend.discovered = False
        with contextlib.suppress(LLMError):
            await self.probe(backend)

    # --- health --------------------------------------------------------------------------------
    def busy(self, backend: Backend) -> bool:
        """Working on a request that has not stalled (a stream sent bytes within its read
        timeout, a non-streamed answer is within its deadline): alive, whatever a probe says."""
        last, now = backend.last_progress, time.monotonic()
        if backend.in_flight <= 0 or last is None:
            return False
        return now - last < self.stall_s or now < backend.quiet_until

    async def probe(self, backend: Backend) -> list[dict[str, Any]]:
        """GET /models on one backend; marks it up or down, and the first time (or after it
        came back) learns its context window. A probe that times out while the backend is busy
        answering, or answered a request meanwhile, leaves it in rotation. Callers at the same
        time (the health checks, a first chat, /ready) share one probe."""
        shared = backend.probing
        if shared is None or shared.done() or shared.get_loop() is not asyncio.get_running_loop():
            backend.probing = shared = asyncio.ensure_future(self._probe(backend))
        return await asyncio.shield(shared)

    async def _probe(self, backend: Backend) -> list[dict[str, Any]]:
        started = time.monotonic()
        try:
            resp = await self.http.get(
                backend.url + "/models", headers=self._headers, timeout=self.probe_timeout_s
            )
            _raise_for_status(backend, resp)
            data = list(resp.json().get("data", []))
        except httpx.TimeoutException as exc:
            if self.busy(backend) or (backend.last_progress or 0) >= started:
                log.info("LLM backend %s is busy answering (its probe timed out)", backend.url)
                return backend.models
            backend.mark_down(f"{type(exc).__name__}: {exc}")
            raise _as_llm_error(exc) from exc
        except (httpx.HTTPError, LLMError, ValueError, AttributeError) as exc:
            gone = isinstance(exc, httpx.ConnectError)
            backend.mark_down(f"{type(exc).__name__}: {exc}", gone=gone)
            raise _as_llm_error(exc) from exc
        backend.mark_up()
        backend.models = data
        if not backend.discovered or (backend.reported and not backend.reported.exact):
            await self._discover(backend, data)
        return data

    async def _discover(self, backend: Backend, listed: list[dict[str, Any]]) -> None:
        window = await discover(
            self.http,
            backend.url,
            self.model,
            listed,
            headers=self._headers,
            timeout=self.probe_timeout_s,
        )
        if window != backend.reported:
            if window:
                kind = "" if window.exact else " (an upper bound)"
                log.info(
                    "LLM backend %s: context window %d%s from %s",
                    backend.url,
                    window.tokens,
                    kind,
                    window.source,
                )
            else:
                log.info(
                    "LLM backend %s does not say its context window; LLM_MAX_MODEL_LEN=%s is used",
                    backend.url,
                    self.fallback_window,
                )
        backend.reported, backend.discovered = window, True

    async def check_all(self) -> None:
        """Probe the backends that need it: not those working on requests right now, or that
        answered one since the last round, which shows they are alive. (A probe would wait for
        a single-slot server, and llama-cpp-python even cuts the answer short for it.)"""
        now = time.monotonic()
        due = [
            b
            for b in self.backends
            if not (
                b.healthy
                and (
                    self.busy(b)
                    or (
                        b.discovered
                        and b.last_progress is not None
                        and now - b.last_progress < (self.health_interval_s or 0)
                    )
                )
            )
        ]
        await asyncio.gather(*(self.probe(b) for b in due), return_exceptions=True)

    async def run_health_checks(self, interval_s: float) -> None:
        """Probe every backend now and then every `interval_s`."""
        while True:
            await self.check_all()
            await asyncio.sleep(interval_s)

    def _wake(self) -> None:
        """Start the health checks at the first use (not at start-up)."""
        if self._health is None and self.health_interval_s:
            self._health = asyncio.create_task(self.run_health_checks(self.health_interval_s))

    async def aclose(self) -> None:
        """Stop the health checks."""
        task, self._health = self._health, None
        if task is None:
            return
        if task.get_loop() is not asyncio.get_running_loop():  # (tests run apps in two loops)
            task.get_loop().call_soon_threadsafe(task.cancel)
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def models(self) -> list[dict[str, Any]]:
        """The model list of the first backend that answers."""
        self._wake()
        last: LLMError | None = None
        for backend in self._order():
            try:
                return await self.probe(backend)
            except LLMError as exc:
                last = exc
        assert last is not None
        raise last

    async def ready(self) -> str:
        """'ok' when a backend can answer: one busy answering is, without being asked."""
        self._wake()
        if any(b.healthy and self.busy(b) for b in self.backends):
            return "ok"
        await self.models()
        return "ok"

    # --- speed and deadlines -------------------------------------------------------------------
    def measure(self, backend: Backend, tokens: int, seconds: float) -> None:
        """Fold `tokens` generated in `seconds` into `backend`'s speed."""
        if tokens < MIN_MEASURED_TOKENS or seconds <= 0:
            return
        rate = tokens / seconds
        old = backend.tokens_per_s
        backend.tokens_per_s = rate if old is None else old + SPEED_EWMA * (rate - old)

    def deadline(self, backend: Backend, max_tokens: int | None) -> Deadline:
        """How long a non-streamed answer of at most `max_tokens` may take on `backend`."""
        budget = max_tokens or 0
        speed = backend.tokens_per_s
        measured = speed is not None
        rate = speed if speed is not None else DEFAULT_TOKENS_PER_S
        needed = budget / rate * SPEED_MARGIN
        wanted = self.stall_s + needed
        return Deadline(
            seconds=min(wanted, self.deadline_max_s),
            budget=budget,
            tokens_per_s=rate,
            measured=measured,
            needed_s=needed,
            idle_s=self.stall_s,
            capped=wanted > self.deadline_max_s,
        )

    # --- requests ------------------------------------------------------------------------------
    def _body(
        self, messages: list[dict[str, str]], stream: bool, params: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return {**body, **params}

    def _progress(self, backend: Backend) -> None:
        backend.last_progress = time.monotonic()

    async def complete(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        """One non-streamed answer, within a deadline made for its token budget (`deadline`):
        a backend that sends nothing until the answer is done is not cut off at LLM_TIMEOUT_S."""
        self._wake()
        body = self._body(messages, False, params)
        budget = params.get("max_completion_tokens") or params.get("max_tokens")
        for backend, last in _with_last(self._order()):
            deadline = self.deadline(backend, budget)
            backend.in_flight += 1
            self._progress(backend)
            backend.quiet_until = max(backend.quiet_until, time.monotonic() + deadline.seconds)
            started = time.monotonic()
            try:
                async with asyncio.timeout(deadline.seconds):
                    resp = await self.http.post(
                        backend.chat_url,
                        json=body,
                        headers=self._headers,
                        timeout=httpx.Timeout(deadline.seconds, connect=5.0),
                    )
            except httpx.ConnectError as exc:
                backend.mark_down(str(exc), gone=True)
                if last:
                    raise _as_llm_error(exc) from exc
                continue  # nothing reached this backend: the next one may serve it
            except httpx.ConnectTimeout as exc:  # never reached it: not about the budget
                raise _as_llm_error(exc) from exc
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise LLMError(504, deadline.message(), "llm_timeout") from exc
            except httpx.HTTPError as exc:
                raise _as_llm_error(exc) from exc
            finally:
                backend.in_flight -= 1
            if resp.status_code in _RETRY and not last:
                backend.mark_down(f"HTTP {resp.status_code}")
                continue  # refused before any work: the next backend may serve it
            self._progress(backend)
            self._check_response(backend, resp)
            backend.mark_up()
            answer = dict(resp.json())
            usage = answer.get("usage")
            tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
            if isinstance(tokens, int):  # the prompt's time counts too: a conservative speed
                self.measure(backend, tokens, time.monotonic() - started)
            return answer
        raise AssertionError("unreachable")

    async def stream(
        self, messages: list[dict[str, str]], **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the backend's `chat.completion.chunk` objects as they arrive (stream_blocks,
        parsed)."""
        blocks = self.stream_blocks(messages, **params)
        try:
            async for block in blocks:
                for data in block.data:
                    yield parse_event(data)
        finally:
            await blocks.aclose()  # type: ignore[attr-defined]

    async def stream_blocks(
        self, messages: list[dict[str, str]], *, keep_usage: bool = True, **params: Any
    ) -> AsyncIterator[Block]:
        """Yield the backend's stream one read at a time: the complete SSE lines that arrived
        together, as it sent them (api.sse), without its `[DONE]`. Closing this generator (the
        client went away) closes the backend connection, which makes vLLM abort the request.
        `keep_usage` False takes the usage-only event out of `raw` (the client did not ask for
        it); its numbers are in the block's `usage` all the same.

        A backend that fails mid-answer (killed, reset, timed out, an error event, or its stream
        ends with neither a finish_reason nor `[DONE]`) raises LLMError after the blocks already
        yielded; only a request nothing was yielded for moves on to the next backend. One that
        fails after its finish_reason (before `[DONE]`) has given the whole answer: it just ends.
        A stream that ends before its first event (llama-cpp-python's way of refusing a prompt)
        is asked again without streaming, so the caller gets the backend's own error."""
        self._wake()
        body = self._body(messages, True, params)
        sent = False
        for backend, last in _with_last(self._order()):
            scan = Scanner(keep_usage=keep_usage)
            first: float | None = None  # when the first token came
            backend.in_flight += 1
            self._progress(backend)
            try:
                async with self.http.stream(
                    "POST", backend.chat_url, json=body, headers=self._headers
                ) as resp:
                    if resp.status_code in _RETRY and not last:
                        backend.mark_down(f"HTTP {resp.status_code}")
                        continue
                    if resp.status_code >= 400:
                        await resp.aread()
                        self._check_response(backend, resp)
                    # after [DONE] the body is read on to its end (the backend ends it there):
                    # a response left unread closes its connection instead of keeping it
                    async for received in resp.aiter_bytes():
                        self._progress(backend)
                        failed: ErrorEvent | None = None
                        try:
                            block = scan.feed(received)
                        except BrokenEvent as exc:
                            self._stream_error(backend, exc, resp.status_code)
                        except ErrorEvent as exc:  # what came before it in this read goes first
                            failed, block = exc, exc.before
                        if block is not None:
                            if block.content and first is None:
                                first = time.monotonic()
                            if not sent:
                                backend.mark_up()
                            sent = True
                            yield block
                        if failed is not None:
                            self._stream_error(backend, failed, resp.status_code)
                    try:
                        scan.end()
                    except BrokenEvent as exc:
                        self._stream_error(backend, exc, resp.status_code)
                    if first is not None and (scan.done or scan.finished):
                        # from the first token on: the decoding speed, without the prompt's time
                        tokens = _completion_tokens(scan.usage) or scan.pieces
                        self.measure(backend, tokens - 1, time.monotonic() - first)
                    if scan.done and not scan.finished:
                        # llama-cpp-python ends an answer so when another request reaches it
                        raise LLMError(
                            502,
                            "the language model backend ended the answer before finishing it "
                            "([DONE] without a finish_reason)",
                        )
                    if not scan.finished:
                        if scan.events:
                            raise LLMError(
                                502, "the language model backend's stream ended mid-answer"
                            )
                        await self._diagnose(backend, body)
                        raise LLMError(
                            502,
                            "the language model backend ended its stream before the first "
                            "token, without saying why (its log may)",
                        )
                    return
            except httpx.ConnectError as exc:
                backend.mark_down(str(exc), gone=True)
                if last or sent:
                    raise _as_llm_error(exc) from exc
            except httpx.TimeoutException as exc:
                if scan.finished:
                    return
                raise _as_llm_error(exc) from exc
            except httpx.HTTPError as exc:
                if scan.finished:
                    return
                if not scan.events:  # cut before its first event: ask why
                    await self._diagnose(backend, body)
                raise _as_llm_error(exc) from exc
            finally:
                backend.in_flight -= 1

    async def _diagnose(self, backend: Backend, streamed: dict[str, Any]) -> None:
        """A stream ended before its first event: ask the same backend the same thing without
        streaming (one token), and raise its error, if it has one to say."""
        body = {**streamed, "stream": False, "max_tokens": 1}
        body.pop("stream_options", None)
        body.pop("max_completion_tokens", None)
        for _ in range(2):  # the stream's connection, back in the pool, may be one it closes
            try:
                resp = await self.http.post(backend.chat_url, json=body, headers=self._headers)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                continue
            except httpx.HTTPError:
                return
            if resp.status_code >= 400:
                self._check_response(backend, resp)
            return

    def _stream_error(
        self, backend: Backend, exc: BrokenEvent | ErrorEvent, status: int
    ) -> NoReturn:
        """A broken event (e.g. the last line of a stream cut short) is a 502; an error event
        (llama.cpp's and vLLM's way after the first token) is raised as the backend's own error."""
        if isinstance(exc, BrokenEvent):
            raise LLMError(
                502, f"the language model backend sent a broken event: {exc.args[0]!r}"
            ) from None
        err = exc.body["error"]
        code = err.get("code") if isinstance(err, dict) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        _raise_error(backend, status, exc.body)

    def _check_response(self, backend: Backend, resp: httpx.Response) -> None:
        if resp.status_code in _RETRY:
            backend.mark_down(f"HTTP {resp.status_code}")
        try:
            _raise_for_status(backend, resp)
        except ContextOverflow as exc:
            self.learn(backend, exc.limit)
            raise


_RETRY = (502, 503)  # the backend did no work: another one may take the request


@dataclass(frozen=True)
class Deadline:
    """A non-streamed answer's deadline and the numbers it was made from."""

    seconds: float
    budget: int  # the answer's max_tokens
    tokens_per_s: float
    measured: bool  # tokens_per_s was measured (else DEFAULT_TOKENS_PER_S)
    needed_s: float  # the budget's time at that speed, with SPEED_MARGIN
    idle_s: float  # LLM_TIMEOUT_S: queue, prompt and first token
    capped: bool  # the time wanted was more than LLM_DEADLINE_MAX_S

    def message(self) -> str:
        """The timeout, in numbers, and the knob that would change it."""
        speed = f"~{_num(self.tokens_per_s)} tokens/s" + ("" if self.measured else " (assumed)")
        why = (
            f"the language model backend did not answer within {_num(self.seconds)} s: the "
            f"answer budget of {self.budget} tokens at {speed} needs ~{_num(self.needed_s)} s, "
            f"after up to LLM_TIMEOUT_S={self.idle_s:g} s for the prompt"
        )
        if self.capped:
            return why + "; lower max_tokens or raise LLM_DEADLINE_MAX_S"
        return why + "; lower max_tokens or raise LLM_TIMEOUT_S"


def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def parse_event(data: bytes) -> dict[str, Any]:
    """One streamed chunk's JSON; a broken one is a 502."""
    try:
        return parse(data)
    except BrokenEvent as exc:
        raise LLMError(
            502, f"the language model backend sent a broken event: {exc.args[0]!r}"
        ) from None


def _completion_tokens(usage: dict[str, Any] | None) -> int | None:
    tokens = (usage or {}).get("completion_tokens")
    return tokens if isinstance(tokens, int) else None


def _with_last(items: list[Backend]) -> list[tuple[Backend, bool]]:
    return [(b, i == len(items) - 1) for i, b in enumerate(items)]


def _as_llm_error(exc: Exception) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return LLMError(504, "the language model backend timed out", "llm_timeout")
    if isinstance(exc, httpx.ConnectError):
        return LLMError(503, "the language model backend is not reachable", "llm_unavailable")
    return LLMError(502, f"the language model backend failed: {exc or type(exc).__name__}")


def _raise_for_status(backend: Backend, resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text[:300]
    _raise_error(backend, resp.status_code, body)


def _raise_error(backend: Backend, status: int, body: Any) -> NoReturn:
    """Raise the backend's error `body` (answered with `status`) as Hearth's, in its words."""
    message = error_fields(body)[0] or (body if isinstance(body, str) else "") or f"HTTP {status}"
    overflow = parse_overflow(status, body)
    if overflow is not None:
        raise ContextOverflow(message, backend, overflow)
    if status in (400, 422):  # a parameter passed through was refused
        raise LLMError(400, f"the language model backend refused the request: {message}", None)
    if status in (401, 403):
        raise LLMError(502, "the language model backend refused Hearth's API key (LLM_API_KEY)")
    if status == 404:
        raise LLMError(502, f"the language model backend does not serve this model: {message}")
    if status == 503:
        raise LLMError(503, f"the language model backend is unavailable: {message}", "llm_busy")
    raise LLMError(502, f"the language model backend answered {status}: {message}")
