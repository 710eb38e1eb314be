"""Pure logic of api.client_shapes, api.tasks and the rewrite's echo check."""

from __future__ import annotations

from pathlib import Path

from api.client_shapes import (
    clean_answer,
    detect_client,
    display_path,
    footer,
    resolve,
    source_events,
    url_annotations,
)
from api.rewrite import echoes_answer
from api.schemas import ChatRequest
from api.tasks import is_task, task_budget
from core.settings import get_settings
from core.types import Citation
from tests.api.test_citations import passage


def req(text: str, **extra: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "hearth", "messages": [{"role": "user", "content": text}], **extra}
    )


def test_footer_is_in_number_order_with_display_paths(tmp_path: Path) -> None:
    s = get_settings(hearth_watch_dir=str(tmp_path / "w"), hearth_data_dir=tmp_path / "d")
    p2 = passage(2, path=str(tmp_path / "w" / "a" / "f2.md"), page=4)
    p1 = passage(1, path=str(tmp_path / "d" / "uploads" / "default" / "x1" / "scan.pdf"))
    text = footer(s, [Citation(2, p2), Citation(1, p1)])
    assert text.splitlines()[3:] == [
        "[1] Doc 1, § Intro (scan.pdf)",
        "[2] Doc 2, page 4, § Intro (a/f2.md)",
    ]
    assert footer(s, []) == ""
    assert display_path(s, "/elsewhere/secret/name.txt") == "name.txt"


def test_annotations_span_their_markers_and_events_keep_numbers(tmp_path: Path) -> None:
    s = get_settings(hearth_data_dir=tmp_path)
    ps = [passage(1), passage(2, page=3), passage(3)]
    text = "A [2]. B [3]."
    got = url_annotations(s, "http://h", text, [Citation(2, ps[1]), Citation(3, ps[2])])
    assert [
        text[a["url_citation"]["start_index"] : a["url_citation"]["end_index"]] for a in got
    ] == [
        "[2]",
        "[3]",
    ]
    assert got[0]["url_citation"]["url"] == "http://h/ui/passages/2?span=0-6"
    events = source_events(s, "http://h", ps, [Citation(2, ps[1])])
    # [2] must be Open WebUI's second source, so passage 1 holds its place
    assert [e["data"]["document"] for e in events] == [["text 1"], ["text 2"]]
    assert events[1]["data"]["metadata"][0]["page"] == 2  # Open WebUI shows page + 1


def test_clean_answer_strips_footer_markers_and_details() -> None:
    sent = (
        '<details type="reasoning" done="true">\n<summary>Thought</summary>\n> x\n</details>\n'
        "The code means the sensor failed [1]. Check it [1, 2].\n\nSources:\n"
        "[1] boiler.md (/root/.local/share/hearth/documents/boiler.md)\n[2] b.md, page 2 (b.md)\n"
    )
    assert clean_answer(sent) == "The code means the sensor failed. Check it."
    plain = "Sources: several manuals agree. See [the manual]."
    assert clean_answer(plain) == plain


def test_openwebui_is_recognised_by_headers_or_tools_only() -> None:
    assert detect_client({"X-OpenWebUI-User-Id": "u1"}, req("q")) == "openwebui"
    tools = [{"type": "function", "function": {"name": "query_knowledge_files"}}]
    assert detect_client({}, req("q", tools=tools)) == "openwebui"
    other = [{"type": "function", "function": {"name": "search_web"}}, "junk", {"function": 3}]
    assert detect_client({"User-Agent": "OpenAI/Python 2.0"}, req("q", tools=other)) is None
    shape = resolve("auto", "openwebui", stream=True, footer_allowed=True)
    assert (shape.footer, shape.annotations, shape.events) == (False, False, True)
    assert resolve("auto", None, stream=True, footer_allowed=False).footer is False
    assert resolve("none", None, stream=False, footer_allowed=True).annotations is False


def test_task_prompts_are_recognised() -> None:
    assert is_task(req("### Task:\nGenerate a concise, 3-5 word title"))
    assert is_task(req("  ### task:\nSuggest 3-5 relevant follow-up questions"))
    assert is_task(req("Available Tools: []\n\nYour task is to choose"))
    assert is_task(req("What is E-4471?", response_format={"type": "json_object"}))
    assert not is_task(req("What is E-4471?", response_format={"type": "text"}))
    assert not is_task(req("What does '### Task:' mean in Open WebUI?"))
    # Open WebUI's DEFAULT_RAG_TEMPLATE put before a real question: not a task
    rag = "### Task:\nRespond to the user query using the provided context, incorporating"
    assert not is_task(req(rag + '\n<context>\n<source id="1">x</source>\n</context>\nq?'))
    lobe_title = "You are a professional conversation summarizer. Generate a concise title"
    titled = req("user: What is E-4471?\nassistant: The sensor failed.")
    titled.messages.insert(0, req(lobe_title).messages[0].model_copy(update={"role": "system"}))
    assert is_task(titled)
    assert (task_budget(None), task_budget(1000), task_budget(40)) == (256, 256, 40)
    # a server told to answer briefly (LLM_MAX_TOKENS) keeps tasks as brief
    assert (task_budget(None, 64), task_budget(1000, 64), task_budget(40, 64)) == (64, 64, 40)


def test_a_rewrite_that_copies_an_answer_is_an_echo() -> None:
    history = [
        ("user", "What does E-4471 mean?"),
        ("assistant", "The boiler error code E-4471 means the pressure sensor failed."),
    ]
    assert echoes_answer("the boiler error code E-4471 means the pressure sensor", history)
    assert not echoes_answer("How to fix the boiler pressure sensor E-4471", history)
    assert not echoes_answer("E-4471", history)


def test_cleaning_is_linear_in_what_a_client_sends() -> None:
    """An earlier answer is the client's text, up to MAX_REQUEST_MB: the cleaning makes one pass.
    (Before: regexes that backtracked; 2,000 newlines took 20 s, 4,000 `<details>` 3.4 s.)"""
    n = 1_000_000
    assert clean_answer("\n" * n + "x") == "x"
    assert clean_answer("<details>" * n) == ("<details>" * n).strip()
    many = "\nSources:\n" * n
    assert clean_answer(many + "[1] a (b)") == (many[: -len("Sources:\n")]).strip()
    assert clean_answer("[1" + " " * n) == "[1"
    assert clean_answer("A [1].\n" + "<details>x</details>" * n) == "A."
