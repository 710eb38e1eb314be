"""The chat UI in a real browser (Playwright driving Debian's Chromium) against the real stack:
`hearth up` with its worker, embedded PostgreSQL and Redis, and the CPU vLLM serving SmolLM2.

SmolLM2-135M rarely writes `[n]` itself; the server cites by attribution when the answer repeats
a passage word for word, so the questions here are answered literally by their documents, and
the chat requests are sent with temperature 0 (the page itself sends no sampling settings).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.e2e.stack import REPO, Stack
from tests.factories import heat_pump_pdf

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
ANSWER_TIMEOUT_MS = 300_000
INDEX_TIMEOUT_MS = 300_000
SCREENSHOT = REPO / "docs" / "ui-screenshot.png"

PANTRY_TXT = """Pantry notes

The pantry door code is 4471 and the spare key hangs behind the flour tin.
<script>window.__xss=1</script>
<img src=x onerror="window.__xss=1">
<svg onload="window.__xss=1"></svg>
[click me](javascript:window.__xss=1)
"""
HOSTILE_ANSWER = """The **pantry** code is 4471 [1].

<script>window.__xss = 1</script>
<img src=x onerror="window.__xss=1">
<svg><animate onbegin="window.__xss=1" attributeName="x" dur="1s"/></svg>
<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>
<a href="javascript:window.__xss=1">a link</a> and [another](javascript:window.__xss=1)
<details open ontoggle="window.__xss=1">x</details>
"""
HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'


@pytest.fixture(scope="module")
def site(stack: Stack) -> Iterator[Stack]:
    """The stack; at the end every document this module made is purged (tests/e2e counts them)."""
    assert stack.token
    before = [i for (i,) in stack.query("SELECT id FROM documents")]
    yield stack
    stack.query("DELETE FROM documents WHERE id <> ALL(%s) RETURNING id", before)


@dataclass
class Tab:
    """A browser context with one page, recording what must never happen: script errors and
    dialogs (alert/confirm: an XSS payload's usual first move; the UI itself uses none)."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    chat_requests: list[dict[str, Any]] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs


@pytest.fixture
def open_tab(browser: Browser, site: Stack) -> Iterator[Callable[..., Tab]]:
    tabs: list[Tab] = []

    def make(viewport: dict[str, int] = DESKTOP, **params: Any) -> Tab:
        context = browser.new_context(
            viewport=viewport, device_scale_factor=2, base_url=site.api, **params
        )
        context.set_default_timeout(30_000)
        tab = Tab(context, context.new_page())
        tab.page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
        tab.page.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
        tab.page.route("**/v1/chat/completions", lambda route: _deterministic(tab, route))
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.context.close()


def _deterministic(tab: Tab, route: Route, **extra: Any) -> None:
    """Record the page's chat request and send it on with temperature 0 (see the docstring), cut
    at the first paragraph (at temperature 0 SmolLM2 repeats its first one)."""
    body = json.loads(route.request.post_data or "{}")
    tab.chat_requests.append({"body": body, "headers": route.request.headers})
    params: dict[str, Any] = {"temperature": 0, "max_tokens": 80, "stop": ["\n\n"], **extra}
    if "story" in body["messages"][-1]["content"]:
        params.update(max_tokens=512, stop=None)  # long enough to be stopped half way
    route.continue_(post_data=json.dumps({**body, **params}))


def sign_in(tab: Tab, token: str) -> None:
    page = tab.page
    page.goto("/")
    expect(page.locator("#signin")).to_be_visible()
    page.locator("#token").fill(token)
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#signin")).to_be_hidden()


def upload_with_picker(page: Page, name: str, data: bytes, mime: str) -> None:
    page.locator("#file-input").set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}]
    )


def upload_by_drop(page: Page, name: str, text: str) -> None:
    transfer = page.evaluate_handle(
        """([name, text]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], name, {type: "text/plain"}));
            return dt;
        }""",
        [name, text],
    )
    page.locator("#dropzone").dispatch_event("dragenter", {"dataTransfer": transfer})
    page.locator("#dropzone").dispatch_event("drop", {"dataTransfer": transfer})


def document_row(page: Page, filename: str) -> Any:
    return page.locator(".doc").filter(has_text=filename).first  # the newest


def wait_indexed(page: Page, filename: str) -> Any:
    row = document_row(page, filename)
    expect(row).to_have_attribute("data-status", "indexed", timeout=INDEX_TIMEOUT_MS)
    return row


def watch_streaming(page: Page) -> None:
    """Record the streaming answer's length at every change, to prove it arrives in pieces."""
    page.evaluate(
        """() => {
            window.__lengths = [];
            new MutationObserver(() => {
                const b = document.querySelector(".msg.assistant.streaming .bubble");
                if (b) window.__lengths.push(b.textContent.length);
            }).observe(document.getElementById("messages"),
                       {subtree: true, childList: true, characterData: true});
        }"""
    )


def ask(page: Page, question: str) -> Any:
    """Type a question, send it with Enter, wait for the whole answer; return its element."""
    done_before = page.locator(".msg.assistant:not(.streaming)").count()
    page.locator("#prompt").fill(question)
    page.locator("#prompt").press("Enter")
    expect(page.locator(".msg.user").last).to_have_text(question)
    finished = page.locator(".msg.assistant:not(.streaming)")
    expect(finished).to_have_count(done_before + 1, timeout=ANSWER_TIMEOUT_MS)
    return finished.last


def assert_no_script_ran(page: Page) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert (
        page.evaluate(
            """() => [...document.querySelectorAll("#messages *, #source-panel *, #conv-list *")]
            .filter(e => e.tagName === "SCRIPT" || e.tagName === "IFRAME" ||
                         [...e.attributes].some(a => a.name.startsWith("on") ||
                             /^\\s*javascript:/i.test(a.value)))
            .map(e => e.outerHTML)"""
        )
        == []
    )


def test_a_bad_token_is_refused(open_tab: Callable[..., Tab]) -> None:
    tab = open_tab(PHONE)
    page = tab.page
    page.goto("/")
    page.locator("#token").fill("hearth_not-a-real-token")
    page.locator("#signin-btn").click()
    expect(page.locator("#signin-error")).to_contain_text("not valid")
    expect(page.locator("#app")).to_be_hidden()
    assert [c for c in tab.context.cookies() if c["name"] == "hearth_session"] == []
    tab.assert_clean()


def test_upload_ask_cite_reload_and_sign_out(
    open_tab: Callable[..., Tab], site: Stack, tmp_path: Path
) -> None:
    tab = open_tab(PHONE)
    page, context = tab.page, tab.context
    assert site.token

    # sign in with the keyboard; the token ends up nowhere but the server's hash table
    sign_in(tab, site.token)
    (cookie,) = [c for c in context.cookies() if c["name"] == "hearth_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert site.token not in page.url
    stored = page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert site.token not in stored and cookie["value"] not in stored
    assert "hearth_session" not in page.evaluate("document.cookie")
    page.keyboard.press("Tab")  # focus is visible
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"

    # upload with the file picker, with progress, and watch it become indexed (live updates)
    # into a collection of its own: tests/e2e index the same manual in `default` on this stack
    page.locator("#tab-docs").click()
    page.locator("#upload-collection").fill("manuals")
    pdf = tmp_path / "pump-manual.pdf"
    heat_pump_pdf(pdf)
    upload_with_picker(page, pdf.name, pdf.read_bytes(), "application/pdf")
    upload_row = page.locator(".upload-item").filter(has_text=pdf.name)
    expect(upload_row).to_have_attribute("data-state", "done")
    expect(upload_row).to_contain_text("queued for indexing")
    row = wait_indexed(page, pdf.name)
    expect(row.locator(".doc-chunks")).to_have_text(re.compile(r"^[1-9]\d* chunks?$"))
    expect(row.locator(".doc-indexed")).to_have_text(re.compile(r"^indexed .*(now|ago)$"))

    # ask in the collection the file went to, and watch the answer stream in
    page.locator("#tab-chat").click()
    expect(page.locator("#collection option[value='hearth:manuals']")).to_have_count(1)
    page.locator("#collection").select_option("hearth:manuals")
    watch_streaming(page)
    answer = ask(page, "How often must the heat pump air filter be cleaned?")
    request = tab.chat_requests[-1]
    assert request["body"]["model"] == "hearth:manuals" and request["body"]["stream"] is True
    assert request["headers"]["x-hearth-footer"] == "off"
    assert request["headers"]["x-hearth-ui"] == "1"
    # a grounded answer is released a sentence at a time (the answer check's gate holds text
    # until its first supported sentence), so a one-sentence answer may arrive whole: that the
    # page renders a stream as it arrives is test_plain_chat_and_stop's (it stops one mid-way)
    text = answer.locator(".bubble").inner_text()
    assert "six weeks" in text, text
    assert "Sources:" not in text  # no text footer: the page shows the sources itself
    assert page.evaluate("location.hash").startswith("#/c/")
    conversation_id = page.evaluate("location.hash").removeprefix("#/c/")
    uuid.UUID(conversation_id)

    # the citation: a chip in the text (model-written or attributed), and the source list
    chips = answer.locator(f".bubble button.chip[title*='{pdf.name}']")
    assert chips.count() >= 1, text
    chips.first.click()
    panel = page.locator("#source-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#source-title")).to_contain_text("Heat pump maintenance")
    expect(page.locator("#source-path")).to_contain_text(pdf.name)
    expect(page.locator("#source-where")).to_contain_text(re.compile(r"page [12]\b"))
    page_no = re.search(r"page (\d+)", page.locator("#source-where").inner_text())
    expect(page.locator("#source-snippet")).to_contain_text("must be cleaned every six weeks")
    expect(page.locator("#source-snippet mark").first).to_contain_text("six weeks")
    href = page.locator("#source-open").get_attribute("href")
    assert page_no and href and href.startswith("/v1/files/file-")
    assert href.endswith(f"/content#page={page_no.group(1)}")  # a PDF opens at the page
    original = context.request.get(href.split("#")[0])  # the session cookie, as a click sends
    assert original.status == 200 and original.body() == pdf.read_bytes()
    assert original.headers["content-type"] == "application/pdf"
    assert original.headers["content-disposition"].startswith("inline")

    # a 390 px screenshot: a test artifact, and the README's picture
    shot = tmp_path / "ui-390px.png"
    page.locator("#source-close").blur()
    page.screenshot(path=str(shot))
    if os.environ.get("HEARTH_UPDATE_SCREENSHOT"):  # the README's picture, when asked for
        shutil.copyfile(shot, SCREENSHOT)

    page.locator("#source-close").focus()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    assert page.evaluate("document.activeElement.classList.contains('chip')")  # focus returns

    # copy the answer
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.api)
    answer.locator(".copy-btn").click()
    expect(answer.locator(".copy-btn")).to_have_text("Copied")
    assert "six weeks" in page.evaluate("navigator.clipboard.readText()")

    # reload: the conversation is still there, in the URL, on the page and in the sidebar
    page.reload()
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator(".msg.user").first).to_have_text(
        "How often must the heat pump air filter be cleaned?"
    )
    expect(page.locator(".msg.assistant .bubble").first).to_contain_text("six weeks")
    expect(page.locator(".msg.assistant .bubble button.chip").first).to_be_visible()
    page.locator("#menu-btn").click()  # at 390 px the sidebar is a drawer
    expect(page.locator("#sidebar")).to_be_in_viewport()
    item = page.locator(f".conv-item[data-id='{conversation_id}']")
    expect(item).to_contain_text("How often must the heat pump air filter be cleaned?")
    expect(item).to_have_class("conv-item current")

    # rename it with the keyboard, find it by title
    item.locator(".rename-btn").click()
    page.locator(".conv-rename").fill("Heat pump filter")
    page.keyboard.press("Enter")
    expect(page.locator(f".conv-item[data-id='{conversation_id}']")).to_contain_text(
        "Heat pump filter"
    )
    listed = context.request.get("/v1/conversations").json()["data"]
    assert {c["id"]: c["title"] for c in listed}[conversation_id] == "Heat pump filter"
    page.locator("#conv-search").fill("no such title here")
    expect(page.locator(".conv-item")).to_have_count(0)
    expect(page.locator("#conv-empty")).to_be_visible()
    page.locator("#conv-search").fill("pump FILTER")
    expect(page.locator(f".conv-item[data-id='{conversation_id}']")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()

    # re-index the file: it goes through the worker again and comes back indexed
    (doc_id, indexed_at) = site.query(
        "SELECT id, indexed_at FROM documents WHERE path LIKE %s ORDER BY id DESC",
        f"%/{pdf.name}",
    )[0]
    page.locator("#tab-docs").click()
    row = wait_indexed(page, pdf.name)
    row.locator("[data-action=reindex]").click()
    expect(page.locator("#toast")).to_contain_text("queued for re-indexing")
    deadline = time.monotonic() + INDEX_TIMEOUT_MS / 1000
    while site.query("SELECT indexed_at FROM documents WHERE id = %s", doc_id)[0][0] == indexed_at:
        assert time.monotonic() < deadline, "the re-index never happened"
        page.wait_for_timeout(500)
    wait_indexed(page, pdf.name)

    # delete it (a second click confirms)
    row = document_row(page, pdf.name)
    row.locator("[data-action=delete]").click()
    expect(row.locator("[data-action=delete]")).to_have_text("Really delete?")
    row.locator("[data-action=delete]").click()
    expect(page.locator(f".doc[data-id='{doc_id}']")).to_have_count(0)
    assert site.query("SELECT status FROM documents WHERE id = %s", doc_id) == [("deleted",)]

    # sign out: the cookie is gone, the API refuses the browser, and the old session is dead
    old_session = cookie["value"]
    page.locator("#signout-btn").click()
    expect(page.locator("#signin")).to_be_visible()
    assert [c for c in context.cookies() if c["name"] == "hearth_session"] == []
    refused = context.request.get("/v1/conversations")
    assert refused.status == 401 and refused.json()["error"]["type"] == "authentication_error"
    replay = httpx.get(
        site.api + "/v1/conversations", cookies={"hearth_session": old_session}, timeout=30
    )
    assert replay.status_code == 401
    page.reload()
    expect(page.locator("#signin")).to_be_visible()
    tab.assert_clean()


def test_plain_chat_and_stop(open_tab: Callable[..., Tab], site: Stack) -> None:
    tab = open_tab(DESKTOP)
    page = tab.page
    assert site.token
    sign_in(tab, site.token)
    expect(page.locator("#plain-toggle")).to_be_visible()
    page.locator("#no-retrieval").check()
    expect(page.locator("#collection")).to_be_disabled()

    page.locator("#prompt").fill("Write a long story about a dragon who guards a library.")
    page.locator("#send-btn").click()
    expect(page.locator("#stop-btn")).to_be_visible()
    expect(page.locator("#send-btn")).to_be_hidden()
    streaming = page.locator(".msg.assistant.streaming .bubble")
    page.wait_for_function(
        "() => (document.querySelector('.msg.assistant.streaming .bubble') || {})"
        ".textContent?.length > 20",
        timeout=ANSWER_TIMEOUT_MS,
    )
    assert streaming.count() == 1
    page.locator("#stop-btn").click()
    answer = page.locator(".msg.assistant").last
    expect(answer).not_to_have_class("msg assistant streaming")
    expect(answer.locator(".msg-note")).to_contain_text("Stopped")
    expect(page.locator("#send-btn")).to_be_visible()
    stopped_at = len(answer.locator(".bubble").inner_text())
    page.wait_for_timeout(1500)
    assert len(answer.locator(".bubble").inner_text()) == stopped_at  # nothing more arrives
    (request,) = tab.chat_requests
    models = page.request.get("/v1/models").json()["data"]
    backend = [m["id"] for m in models if m["owned_by"] != "hearth"]
    assert request["body"]["model"] == backend[0]  # plain chat: the backend model

    # the page is usable again straight away
    reply = ask(page, "Say hello.")
    expect(reply.locator(".bubble")).not_to_be_empty()
    expect(reply.locator(".sources")).to_have_count(0)  # no retrieval, no sources
    tab.assert_clean()


def test_hostile_documents_and_answers_never_run(open_tab: Callable[..., Tab], site: Stack) -> None:
    tab = open_tab(DESKTOP)
    page, context = tab.page, tab.context
    assert site.token
    sign_in(tab, site.token)

    # a document carrying script payloads, dropped onto the page, indexed and cited
    page.locator("#tab-docs").click()
    upload_by_drop(page, "pantry-notes.txt", PANTRY_TXT)
    wait_indexed(page, "pantry-notes.txt")
    page.locator("#tab-chat").click()
    answer = ask(page, "What is the pantry door code?")
    assert "4471" in answer.inner_text()
    sources = answer.locator(".source-btn[title*='pantry-notes.txt']")
    assert sources.count() >= 1, answer.inner_text()
    sources.first.click()
    expect(page.locator("#source-path")).to_contain_text("pantry-notes.txt")
    expect(page.locator("#source-snippet")).to_contain_text("<script>window.__xss=1</script>")
    expect(page.locator("#source-snippet")).to_contain_text('onerror="window.__xss=1"')
    page.wait_for_timeout(500)  # give a smuggled handler its chance
    assert_no_script_ran(page)

    # a stored answer whose Markdown carries every usual payload, with hostile sources
    me = context.request.get("/ui/me").json()
    cid = str(uuid.uuid4())
    ((doc_id, collection),) = site.query(
        "SELECT id, collection FROM documents WHERE path LIKE %s AND status = 'indexed'",
        "%/pantry-notes.txt",
    )
    source = {
        "index": 1,
        # a document the user may read: others' sources are hidden, and an answer citing a
        # collection the user cannot read is withheld
        "document_id": doc_id,
        "collection": collection,
        "path": f"/w/{HOSTILE}.md",
        "title": HOSTILE,
        "page": None,
        "heading_path": [HOSTILE],
        "char_start": 0,
        "char_end": 10,
        "snippet": f"The pantry code is 4471. {HOSTILE}",
    }
    site.query(
        "INSERT INTO conversations (id, user_id, title) VALUES (%s, %s, %s) RETURNING id",
        cid,
        me["id"],
        HOSTILE,
    )
    site.query(
        "INSERT INTO messages (conversation_id, role, content, citations) VALUES"
        " (%s, 'user', %s, '[]'), (%s, 'assistant', %s, %s::jsonb) RETURNING id",
        cid,
        HOSTILE,
        cid,
        HOSTILE_ANSWER,
        json.dumps([source]),
    )
    page.goto(f"/#/c/{cid}")
    page.reload()  # the sidebar lists it too
    bubble = page.locator(".msg.assistant .bubble")
    expect(bubble).to_contain_text("code is 4471")
    expect(bubble.locator("strong")).to_have_text("pantry")  # Markdown is rendered...
    expect(page.locator(".msg.user .bubble")).to_have_text(HOSTILE)  # ...a question is text
    expect(page.locator(f".conv-item[data-id='{cid}']")).to_contain_text(HOSTILE)
    bubble.locator("button.chip").first.click()
    expect(page.locator("#source-title")).to_have_text(HOSTILE)
    expect(page.locator("#source-where")).to_have_text(HOSTILE)
    expect(page.locator("#source-snippet")).to_contain_text(HOSTILE)
    expect(page.locator("#source-snippet mark")).to_contain_text("pantry code is 4471")
    page.wait_for_timeout(1000)
    assert_no_script_ran(page)
    tab.assert_clean()
    assert context.request.delete(f"/v1/conversations/{cid}", headers={"X-Hearth-UI": "1"}).ok


def tiny_png() -> bytes:
    """A real 8x8 PNG: an image Hearth cannot read without OCR."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def test_failures_other_devices_and_the_dark_theme(
    open_tab: Callable[..., Tab], site: Stack
) -> None:
    assert site.token
    dark = open_tab(DESKTOP, color_scheme="dark")
    sign_in(dark, site.token)
    page = dark.page

    # files Hearth cannot index show why, live, and nothing else is lost
    page.locator("#tab-docs").click()
    upload_by_drop(page, "blank-notes.txt", "")
    page.locator("#file-input").set_input_files(
        files=[{"name": "receipt-scan.png", "mimeType": "image/png", "buffer": tiny_png()}]
    )
    blank = document_row(page, "blank-notes.txt")
    expect(blank).to_have_attribute("data-status", "failed", timeout=INDEX_TIMEOUT_MS)
    expect(blank.locator(".doc-error")).to_contain_text("empty")
    scan = document_row(page, "receipt-scan.png")
    expect(scan).to_have_attribute("data-status", "needs_ocr", timeout=INDEX_TIMEOUT_MS)
    expect(scan.locator(".status")).to_have_text("needs OCR")

    # a conversation started on one device (the page's own request) shows on another
    title = f"Asked on the laptop {uuid.uuid4().hex[:8]}"
    backend = next(
        m["id"]
        for m in dark.context.request.get("/v1/models").json()["data"]
        if m["owned_by"] != "hearth"
    )
    started = dark.context.request.post(
        "/v1/chat/completions",
        headers={"X-Hearth-UI": "1", "Content-Type": "application/json"},
        data=json.dumps(
            {"model": backend, "max_tokens": 8, "messages": [{"role": "user", "content": title}]}
        ),
    )
    assert started.status == 200, started.text()
    cid = started.headers["x-conversation-id"]
    phone = open_tab(PHONE, color_scheme="light")
    sign_in(phone, site.token)
    phone.page.locator("#menu-btn").click()
    item = phone.page.locator(f".conv-item[data-id='{cid}']")
    expect(item).to_contain_text(title)
    item.click()
    expect(phone.page.locator(".msg.user").first).to_have_text(title)

    # the theme follows the system setting
    def background(tab: Tab) -> str:
        return str(tab.page.evaluate("getComputedStyle(document.body).backgroundColor"))

    assert background(dark) == "rgb(22, 20, 18)"  # --bg of the dark scheme, #161412
    assert background(phone) == "rgb(250, 249, 247)"  # --bg of the light scheme, #faf9f7
    dark.assert_clean()
    phone.assert_clean()
