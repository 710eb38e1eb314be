"""The real Open WebUI 0.12.4 in front of a real `hearth up` (CPU vLLM): a chat sent through Open
WebUI's own API the way its frontend sends it, and through its page in Chromium; after a reload
the answer's citations must be stored on the message (and shown as chips), and the chat's
generated title must be a title. A recording proxy between Open WebUI and Hearth keeps every
request Open WebUI made, written to test-artifacts/openwebui/ (tests/fixtures/openwebui/ holds a
reviewed copy for the API's unit tests).

Open WebUI keeps citations only from source events in the stream (`"event": {"type": "source",
...}`) or `delta.annotations` of type `url_citation` (utils/middleware.py, process_chat_response);
it asks for the title in a separate non-streamed request whose answer must hold
`{"title": ...}` JSON, else the title falls back to the user's question."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS

from .openwebui import OpenWebUI, RecordingProxy, run_openwebui
from .stack import REPO, Stack, start_stack

# the stack, Open WebUI and a CPU-model answer with its three tasks, on two shared cores: the
# module-scoped setup alone took >15 min under load (the suite's per-test timeout is 900 s)
pytestmark = [pytest.mark.slow, pytest.mark.openwebui, pytest.mark.timeout(3600)]

DOC = "owui-boiler.md"
NOTES = """# Boiler notes

The boiler in the cellar shows error code E-4471 when the water pressure falls below one bar.
To fix E-4471, open the blue filling valve until the gauge reads 1.5 bar.
"""
# "What does boiler error code E-4471 mean?" gets, from the CPU model at temperature 0, an
# invented answer ("a safety feature that prevents a boiler explosion"), which the answer check
# rightly turns into the refusal, with no sources; this question it answers from the passage
QUESTION = "How do I fix boiler error E-4471?"
DOC_TITLE = "Boiler notes"  # the document's title (its heading), Hearth's label for it
# a source chip shows Hearth's label, or its link: Open WebUI lists a source whose id is a URL
# by that URL (Citations.svelte: `name: metadata?.external ? _source.name : id`)
CHIP_TEXT = re.compile(rf"{DOC_TITLE}|{re.escape(DOC)}|/ui/passages/\d+|/v1/files/file-\d+")
ANSWER_TIMEOUT_S = 900
ARTIFACTS = REPO / "test-artifacts" / "openwebui"
# The stack under test answers briefly: the CPU model makes ~1 token/s on two busy cores, and
# Open WebUI asks for an answer, a title, tags and follow-ups per chat (LLM_MAX_TOKENS also caps
# those task answers, api/tasks.py).
STACK_ENV = {"LLM_MAX_TOKENS": "96"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's own `hearth up` (not the session's), with a small answer budget."""
    where = tmp_path_factory.mktemp("owui-stack")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in STACK_ENV.items():
            mp.setenv(name, value)
        running = start_stack(where / "data", where / "hearth-up.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium through Playwright, launched as tests/ui launches it."""
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM} (`make system-deps` installs Debian's)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def hearth(stack: Stack) -> Stack:
    stack.watch_dir.mkdir(parents=True, exist_ok=True)
    (stack.watch_dir / DOC).write_text(NOTES)
    stack.wait_for_file(DOC)
    # as README "Open WebUI as a multi-user front-end": each Open WebUI user becomes a Hearth
    # user of their own, who reads the watched folder's collection by the household's grant
    out = stack.hearth("collection", "grant", "default", "--group", "everyone")
    assert out.returncode == 0, out.stderr
    return stack


@pytest.fixture(scope="module")
def frontend_token(hearth: Stack) -> str:
    """The key Open WebUI is configured with: a front-end token (`--frontend`), so its
    X-OpenWebUI-User-* headers name the person each request is for."""
    out = hearth.hearth("token", "create", "--user", "openwebui", "--frontend")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[0]
    assert token.startswith("hearth_"), out.stdout
    return token


@pytest.fixture(scope="module")
def proxy(hearth: Stack) -> Iterator[RecordingProxy]:
    with RecordingProxy(hearth.api) as p:
        yield p


@pytest.fixture(scope="module")
def owui(
    frontend_token: str, proxy: RecordingProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenWebUI]:
    with run_openwebui(
        tmp_path_factory.mktemp("openwebui"), proxy.url + "/v1", frontend_token, timeout_s=1500
    ) as running:
        yield running
    save_exchanges(proxy)


def save_exchanges(proxy: RecordingProxy) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = [e.redacted() for e in proxy.exchanges]
    (ARTIFACTS / "exchanges.json").write_text(json.dumps(out, indent=1, ensure_ascii=False))


def hearth_model(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/api/models")
    assert r.status_code == 200, r.text
    models = r.json()["data"]
    ids = [m["id"] for m in models]
    assert "hearth" in ids, ids
    return next(m for m in models if m["id"] == "hearth")


def frontend_payload(model: dict[str, Any], question: str) -> tuple[dict[str, Any], str, str]:
    """The body Open WebUI 0.12.4's chat page posts to /api/chat/completions for the first
    message of a new chat, as recorded from the page in Chromium (no `messages`: the server
    builds them from `user_message`): `parent_id: null` and no `chat_id` make the server create
    the chat; `id` is the assistant message's; with a `session_id` the answer is produced in the
    background and saved to the chat as it streams."""
    user_id, assistant_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = int(time.time())
    user_message = {
        "id": user_id,
        "parentId": None,
        "childrenIds": [assistant_id],
        "role": "user",
        "content": question,
        "timestamp": now,
        "models": [model["id"]],
    }
    body = {
        "stream": True,
        "model": model["id"],
        "params": {"model_controls": {}},
        "tool_ids": [],
        "tool_servers": [],
        "features": {
            "voice": False,
            "image_generation": False,
            "code_interpreter": False,
            "web_search": False,
            "memory": True,
        },
        "variables": {"{{USER_NAME}}": "User", "{{USER_LANGUAGE}}": "en-US"},
        "chat_variables": {},
        "model_item": model,
        "session_id": "e2e-" + uuid.uuid4().hex[:12],
        "id": assistant_id,
        "message_ids": [{"model_id": model["id"], "message_id": assistant_id, "modelIdx": 0}],
        "parent_id": None,
        "user_message": user_message,
        "background_tasks": {
            "title_generation": True,
            "tags_generation": True,
            "follow_up_generation": True,
        },
    }
    return body, user_id, assistant_id


def wait_for_answer(client: httpx.Client, chat_id: str, message_id: str) -> dict[str, Any]:
    """Poll the stored chat until the assistant message is done; fail loudly at the deadline."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        r = client.get(f"/api/v1/chats/{chat_id}")
        if r.status_code == 200:
            message = r.json()["chat"]["history"]["messages"].get(message_id) or {}
            if message.get("done"):
                return dict(r.json())
        if time.monotonic() > deadline:
            pytest.fail(f"no finished answer after {ANSWER_TIMEOUT_S}s: {r.status_code} {r.text}")
        time.sleep(1)


def source_names(message: dict[str, Any]) -> list[str]:
    names = []
    for s in message.get("sources") or []:
        names.append(str((s.get("source") or {}).get("name", "")))
        names += [
            str(m.get("name", "")) + " " + str(m.get("source", "")) for m in s.get("metadata") or []
        ]
    return names


def close_whats_new(page: Any) -> None:
    """An admin's first visit opens "What's New in Open WebUI" over the chat; close it."""
    dialog = page.get_by_role("dialog").filter(has_text="What's New")
    if dialog.count() and dialog.first.is_visible():
        dialog.first.get_by_role("button", name="Close").first.click()
        dialog.first.wait_for(state="hidden", timeout=10_000)


def assert_is_title(title: str, question: str) -> None:
    assert title and title != "New Chat", f"no title was set: {title!r}"
    assert not title.lstrip().startswith("#") and "Task" not in title, title
    assert "I could not find" not in title and "Sources" not in title, title
    assert "[1]" not in title and "{" not in title, title
    # Open WebUI falls back to the question when the model's answer held no {"title": ...}
    assert title.strip() != question.strip(), f"title generation failed, fell back: {title!r}"
    assert len(title) <= 80 and len(title.split()) <= 10, title


@pytest.fixture(scope="module")
def api_chat(owui: OpenWebUI, proxy: RecordingProxy) -> dict[str, Any]:
    """One chat sent through Open WebUI's API, answered, titled, tagged and given follow-ups;
    then read back as a reload reads it."""
    with owui.client() as client:
        model = hearth_model(client)
        before = len(proxy.chats())
        body, _, assistant_id = frontend_payload(model, QUESTION)
        r = client.post("/api/chat/completions", json=body)
        assert r.status_code == 200, (r.status_code, r.text, owui.log_tail())
        started = r.json()
        assert started.get("status") is True and started.get("chat_id"), started
        chat_id = started["chat_id"]
        wait_for_answer(client, chat_id, assistant_id)
        # the answer, then the title (begun with the answer), tags and follow-ups
        proxy.wait_idle(before + 4, ANSWER_TIMEOUT_S)
        reloaded = client.get(f"/api/v1/chats/{chat_id}")
        assert reloaded.status_code == 200, reloaded.text
    save_exchanges(proxy)
    return {"chat": reloaded.json(), "assistant_id": assistant_id, "chat_id": chat_id}


def test_openwebui_lists_hearth_models(owui: OpenWebUI, proxy: RecordingProxy) -> None:
    with owui.client() as client:
        hearth_model(client)
    listed = [e for e in proxy.exchanges if e.path.rstrip("/").endswith("/v1/models")]
    assert listed and listed[0].status == 200, [(e.path, e.status) for e in proxy.exchanges]


def test_answer_is_stored_with_its_citations(api_chat: dict[str, Any]) -> None:
    message = api_chat["chat"]["chat"]["history"]["messages"][api_chat["assistant_id"]]
    assert not message.get("error"), message.get("error")
    assert message["content"].strip(), message
    names = source_names(message)
    assert any(DOC in n or DOC_TITLE in n for n in names), f"no source for {DOC}: {message}"


def test_generated_title_is_a_title(api_chat: dict[str, Any]) -> None:
    assert_is_title(api_chat["chat"]["title"], QUESTION)


def test_background_tasks_are_answered_as_plain_chat(
    api_chat: dict[str, Any], proxy: RecordingProxy
) -> None:
    """Title, tags and follow-ups reach Hearth as non-streamed `### Task:` requests; each must
    come back as the JSON the task asked for, with no sources footer."""
    tasks = [
        e
        for e in proxy.chats()
        if isinstance(e.body, dict)
        and not e.body.get("stream")
        and "### Task:" in json.dumps(e.body.get("messages", []))
    ]
    assert len(tasks) >= 3, [(e.path, e.body) for e in proxy.chats()]
    for e in tasks:
        assert e.status == 200, (e.status, e.response[:500])
        content = json.loads(e.response)["choices"][0]["message"]["content"]
        assert "Sources:" not in content, content
        assert "I could not find" not in content, content
        start, end = content.find("{"), content.rfind("}")
        assert start >= 0 and end > start, f"no JSON in the task's answer: {content!r}"
        json.loads(content[start : end + 1])


def test_chat_page_shows_citation_chips_after_reload(
    api_chat: dict[str, Any], owui: OpenWebUI, chromium: Any
) -> None:
    """Open the stored chat in Chromium (WEBUI_AUTH=false signs the page in by itself), reload,
    and look for the source chip naming the document under the answer."""
    from playwright.sync_api import expect

    context = chromium.new_context()
    page = context.new_page()
    try:
        page.goto(owui.url + "/c/" + api_chat["chat_id"], wait_until="domcontentloaded")
        page.reload(wait_until="domcontentloaded")
        # the row under the answer: a toggle "N Sources" (aria-label "Toggle N sources") that
        # opens one chip per source, `#source-<message id>-<n>`, labelled with its name
        aid = api_chat["assistant_id"]
        expect(page.locator(f"#message-{aid}")).to_be_visible(timeout=120_000)
        close_whats_new(page)
        toggle = page.locator(f"#message-{aid} button[aria-label^='Toggle']").first
        expect(toggle).to_be_visible(timeout=120_000)
        toggle.click()
        chip = page.locator(f"[id^='source-{aid}-']").filter(has_text=CHIP_TEXT)
        expect(chip.first).to_be_visible(timeout=30_000)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "api-chat-reloaded.png"))
        context.close()


BROWSER_QUESTION = QUESTION  # in a chat of its own


def test_chat_sent_from_the_page_keeps_its_citations_after_reload(
    hearth: Stack, owui: OpenWebUI, proxy: RecordingProxy, chromium: Any
) -> None:
    """A person's path: type the question into Open WebUI's page, let it answer, reload, open
    the sources under the answer. The page's own request body is kept for the fixtures."""
    from playwright.sync_api import Request, expect

    context = chromium.new_context()
    page = context.new_page()
    sent: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/api/chat/completions"):
            headers = {**request.headers, "authorization": "Bearer <open webui token>"}
            sent.append({"headers": headers, "body": request.post_data_json})

    page.on("request", on_request)
    try:
        page.goto(owui.url + "/", wait_until="domcontentloaded")
        box = page.locator("#chat-input")
        expect(box).to_be_visible(timeout=120_000)
        close_whats_new(page)
        before = len(proxy.chats())
        with page.expect_response(
            lambda r: r.url.endswith("/api/chat/completions"), timeout=120_000
        ) as started:
            box.click()
            page.keyboard.type(BROWSER_QUESTION)
            page.keyboard.press("Enter")
        chat_id = started.value.json()["chat_id"]
        body = sent[-1]["body"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "frontend-chat-request.json").write_text(json.dumps(sent, indent=1))
        assistant_id = body["id"]
        with owui.client() as client:
            wait_for_answer(client, chat_id, assistant_id)
        proxy.wait_idle(before + 2, ANSWER_TIMEOUT_S)
        page.reload(wait_until="domcontentloaded")
        expect(page.locator(f"#message-{assistant_id}")).to_be_visible(timeout=120_000)
        close_whats_new(page)
        toggle = page.locator(f"#message-{assistant_id} button[aria-label^='Toggle']").first
        expect(toggle).to_be_visible(timeout=120_000)
        toggle.click()
        chip = page.locator(f"[id^='source-{assistant_id}-']").filter(has_text=CHIP_TEXT)
        expect(chip.first).to_be_visible(timeout=30_000)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page-chat-reloaded.png"))
        save_exchanges(proxy)
        context.close()


# --- the contract the asserts above rest on, against a scripted backend instead of Hearth -------

SCRIPTED_SOURCE = {
    "source": {"name": DOC, "id": "doc-1"},
    "document": ["E-4471: the water pressure is below one bar"],
    "metadata": [{"source": DOC, "name": DOC}],
}


class ScriptedBackend(BaseHTTPRequestHandler):
    """Answers as a backend Open WebUI can keep citations from: a source event in the stream,
    `{"title": ...}` JSON for the title task."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        models = [{"id": "hearth", "object": "model", "owned_by": "hearth"}]
        self._send(json.dumps({"object": "list", "data": models}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if not body.get("stream"):
            prompt = body["messages"][0]["content"]
            text = '{"title": "Boiler Error Code"}' if "title" in prompt else '{"tags": []}'
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self._send(json.dumps({"object": "chat.completion", "choices": [choice]}).encode())
            return
        chunks: list[dict[str, Any]] = [
            {
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "Low pressure [1]."}}
                ]
            },
            {"choices": [], "event": {"type": "source", "data": SCRIPTED_SOURCE}},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        out = b"".join(
            b"data: " + json.dumps({"object": "chat.completion.chunk", **c}).encode() + b"\n\n"
            for c in chunks
        )
        self._send(out + b"data: [DONE]\n\n", "text/event-stream")


def test_openwebui_keeps_source_events_and_json_titles(
    chromium: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The asserts above can pass: with a backend that sends a source event and a JSON title,
    the real Open WebUI stores the source on the message, shows its chip after a reload, and
    titles the chat from the JSON. (If this fails, the harness is wrong, not Hearth.)"""
    from playwright.sync_api import expect

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), ScriptedBackend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    backend = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        with (
            run_openwebui(tmp_path_factory.mktemp("owui-scripted"), backend, "k") as owui,
            owui.client() as client,
        ):
            body, _, aid = frontend_payload(hearth_model(client), QUESTION)
            r = client.post("/api/chat/completions", json=body)
            assert r.status_code == 200, r.text
            chat_id = r.json()["chat_id"]
            wait_for_answer(client, chat_id, aid)
            deadline = time.monotonic() + 120
            while (chat := client.get(f"/api/v1/chats/{chat_id}").json())["title"] == "New Chat":
                assert time.monotonic() < deadline, chat
                time.sleep(0.5)
            message = chat["chat"]["history"]["messages"][aid]
            assert any(DOC in n for n in source_names(message)), message
            assert_is_title(chat["title"], QUESTION)
            page = chromium.new_page()
            page.goto(owui.url + "/c/" + chat_id, wait_until="domcontentloaded")
            page.reload(wait_until="domcontentloaded")
            expect(page.locator(f"#message-{aid}")).to_be_visible(timeout=120_000)
            close_whats_new(page)
            page.locator(f"#message-{aid} button[aria-label^='Toggle']").first.click()
            chip = page.locator(f"[id^='source-{aid}-']").filter(has_text=DOC)
            expect(chip.first).to_be_visible(timeout=30_000)
            page.close()
    finally:
        server.shutdown()
        server.server_close()
