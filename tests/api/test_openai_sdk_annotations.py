"""The real `openai` SDK against the real app (a real PostgreSQL, a scripted backend on a real
socket): a cited answer's `url_citation` annotations come out as the SDK's own typed objects
(`Annotation`, `AnnotationURLCitation`), non-streamed, streamed through the SDK's accumulating
`chat.completions.stream()` helper, and streamed raw; each spans the `[n]` marker of its passage
in the text the client received, and its URL is that passage's file under PUBLIC_URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import psycopg
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.chat_completion_message import Annotation, AnnotationURLCitation

from tests.api.test_chat_api import client, seed
from tests.mock_llm import MockLLM, serve

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What does E-4471 mean, and when do tomatoes get water?"}
]
# passage 2 cited before 1, and more than once: the spans are each passage's first marker
REPLY = "Water the tomatoes every morning [2]. E-4471 means the pressure sensor failed [1][2]."
PUBLIC = "https://hearth.example"


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    return seed(db)


@pytest.fixture
def sdk(pg_url: str, token: str) -> Iterator[tuple[openai.OpenAI, MockLLM]]:
    with serve(MockLLM()) as mock, client(pg_url, token, mock, public_url=PUBLIC + "/") as c:
        mock.reply = lambda messages: REPLY
        yield (
            openai.OpenAI(
                base_url="http://testserver/v1", api_key=token, http_client=c, max_retries=0
            ),
            mock,
        )


def check(annotations: list[Any] | None, text: str, sources: list[dict[str, Any]]) -> None:
    """Typed, one per passage 1..the highest cited, each spanning its own first marker."""
    assert annotations, "no annotations"
    by_number = {s["index"]: s for s in sources}
    assert len(annotations) == max(by_number)
    for n, a in enumerate(annotations, start=1):
        assert isinstance(a, Annotation), type(a)
        assert a.type == "url_citation"
        cit = a.url_citation
        assert isinstance(cit, AnnotationURLCitation), type(cit)
        assert text[cit.start_index : cit.end_index] == f"[{n}]", (n, cit)
        assert cit.start_index == text.index(f"[{n}]")
        assert cit.url.startswith(f"{PUBLIC}/ui/passages/{by_number[n]['chunk_id']}?")
        assert cit.title == by_number[n]["path"].rsplit("/", 1)[-1]


def test_non_streamed_message_annotations_are_typed(
    sdk: tuple[openai.OpenAI, MockLLM],
) -> None:
    api, _ = sdk
    done = api.chat.completions.create(model="hearth", messages=QUESTION)
    message = done.choices[0].message
    assert message.content is not None
    check(message.annotations, message.content, (done.model_extra or {})["sources"])


def test_streamed_annotations_accumulate_into_typed_objects(
    sdk: tuple[openai.OpenAI, MockLLM],
) -> None:
    """The SDK's stream helper merges each delta (its unknown fields too) into a message
    snapshot, whose `annotations` field is typed."""
    api, _ = sdk
    sources: list[dict[str, Any]] = []
    with api.chat.completions.stream(model="hearth", messages=QUESTION) as stream:
        for event in stream:  # the snapshot keeps no top-level extras: Hearth's sources
            if event.type == "chunk":
                sources = (event.chunk.model_extra or {}).get("sources") or sources
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content is not None
    check(message.annotations, message.content, sources)


def test_raw_streamed_delta_annotations_validate_as_the_sdk_type(
    sdk: tuple[openai.OpenAI, MockLLM],
) -> None:
    """`ChoiceDelta` has no `annotations` field (openai 1.x-3.x): the SDK keeps them as the
    delta's extra fields, which must validate as the message's `Annotation` type."""
    api, _ = sdk
    text, found, sources = "", list[Annotation](), list[dict[str, Any]]()
    stream = api.chat.completions.create(model="hearth", messages=QUESTION, stream=True)
    for chunk in stream:
        sources = (chunk.model_extra or {}).get("sources") or sources
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        found += [
            Annotation.model_validate(a) for a in (delta.model_extra or {}).get("annotations") or []
        ]
    check(found, text, sources)
