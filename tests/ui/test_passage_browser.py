"""A citation followed in a real browser (Playwright driving Debian's Chromium): the URL of a real
chat answer's url_citation annotation (the real app on a real socket, a real PostgreSQL, a
scripted LLM backend), opened signed out, asks for the sign-in, then shows the passage marked in
its document, and its file downloads with the session; a second click, from another site's page
as in Open WebUI, shows it straight away (the strict session cookie is not sent with a
cross-site navigation, but the page's own requests carry it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from tests.conftest import serve_app
from tests.mock_llm import MockLLM, serve
from tests.ui.test_passages import EMB, TEXTS, chunk_ids, index_doc

pytestmark = pytest.mark.slow

ANSWER = "The household alarm code is Quebec-5521 [1]."
ELSEWHERE = "http://chat.example"  # another site: a chat front-end's page


@pytest.fixture
def served(
    db: psycopg.Connection, pg_url: str, tmp_path: Path
) -> Iterator[tuple[str, str, list[int]]]:
    """(base URL of the app, ann's token, the chunk ids of ann's alarm notes), the notes indexed
    in her collection."""
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "user"), "t")
    db.commit()
    root = tmp_path / "watched"
    ids = chunk_ids(db, index_doc(db, root / "house" / "alarm.md", TEXTS, "user-ann"))
    with serve(MockLLM()) as mock:
        mock.reply = lambda messages: ANSWER
        settings = get_settings(
            database_url=pg_url,
            hearth_data_dir=tmp_path / "data",
            hearth_watch_dir=str(root),
            llm_base_url=mock.url,
            llm_model="mock",
            relevance_threshold=0,
            rate_limit_rps=0,
        )
        with serve_app(create_app(settings, embedder=EMB)) as base:
            yield base, token, ids


def cited(base: str, token: str) -> tuple[str, str]:
    """(URL, passage text) of `[1]` in a chat answer, as a client that shows annotations gets
    them (no citation header: the default shape)."""
    ask = {"model": "hearth", "messages": [{"role": "user", "content": "What is the alarm code?"}]}
    r = httpx.post(
        f"{base}/v1/chat/completions",
        json=ask,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    first = message["annotations"][0]["url_citation"]
    assert message["content"][first["start_index"] : first["end_index"]] == "[1]"
    source = r.json()["sources"][0]
    assert source["index"] == 1 and not source["snippet"].endswith("…")
    return str(first["url"]), str(source["snippet"])


def assert_passage_shown(page: Page, text: str) -> None:
    """The passage's text, and only it, marked; unmarked neighbours around it."""
    marks = page.locator("#context mark")
    expect(marks.first).to_be_visible()
    assert "\n\n".join(marks.all_text_contents()) == text
    assert "Quebec-5521" in text
    expect(page.locator("#context span.piece").first).to_be_attached()  # a neighbour
    expect(page.locator("#doc-path")).to_have_text("house/alarm.md")
    expect(page.locator("#doc-title")).to_have_text("Alarm notes")
    marked, plain = page.evaluate(
        """() => ["#context mark", "#context span.piece"].map(
            (css) => getComputedStyle(document.querySelector(css)).backgroundColor)"""
    )
    assert marked != plain, (marked, plain)  # the passage stands out


def test_a_citation_opens_the_passage_after_signing_in(
    browser: Browser, served: tuple[str, str, list[int]]
) -> None:
    base, token, ids = served
    url, text = cited(base, token)
    assert url.startswith(f"{base}/ui/passages/")
    assert int(url.rsplit("/", 1)[1].split("?")[0]) in ids
    context = browser.new_context()
    context.set_default_timeout(30_000)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#context mark")).to_have_count(0)
        page.locator("#token").fill(token)
        page.keyboard.press("Enter")
        expect(page.locator("#signin")).to_be_hidden()
        assert_passage_shown(page, text)
        assert page.url == url  # still the citation's URL: signing in came back to it

        # from another site's page (a chat front-end), as a person clicks a citation chip there
        page.route(
            f"{ELSEWHERE}/**",
            lambda route: route.fulfill(
                content_type="text/html",
                body=f'<a id="chip" href="{url}">[1]</a>',
            ),
        )
        page.goto(f"{ELSEWHERE}/c/1")
        page.locator("#chip").click()
        page.wait_for_url(url)
        expect(page.locator("#signin")).to_be_hidden()
        assert_passage_shown(page, text)

        # the file, with the session: a click on the page's own link
        page.locator("#download").click()
        page.wait_for_url(f"{base}/v1/files/**")
        expect(page.locator("body")).to_contain_text(TEXTS[2])
        assert errors == []
    finally:
        context.close()
