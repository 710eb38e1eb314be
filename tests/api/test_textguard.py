"""api.textguard's pure parts: the body scan across chunk seams, the field it names, and what it
must let through (escaped backslashes, surrogate pairs, deep nesting). The app-level behaviour is
in tests/api/test_adversarial_input.py."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from api.textguard import BadText, _checked, bad_field, bad_json_field, clean_text

BAD = [
    (b'{"query":"a\\u0000b"}', "query"),
    (b'{"messages":[{"content":"x\\ud800"}]}', "messages.0.content"),
    (b'{"messages":[{"content":"\\uDC00x"}]}', "messages.0.content"),
    (b'{"a":{"b\\u0000":1}}', "a"),
    (b'{"\\u0000":1}', "body"),
    (b'"\\ud83d"', "body"),
    (b'{"q":"x' + b"\xed\xa0\x80" + b'"}', "q"),  # a surrogate's UTF-8 bytes
]
GOOD = [
    b'{"query":"a\\\\u0000b"}',  # an escaped backslash, then the letters u0000
    b'{"query":"\\ud83d\\ude00 fire"}',  # a surrogate pair: one emoji
    b'{"query":"\\u00e9t\\u00e9"}',
    json.dumps({"query": "plain text " * 1000}).encode(),
]


def run_through(body: bytes, cuts: list[int]) -> None:
    """Feed `body` to the guard's receive in pieces cut at `cuts`, as the route would read it."""
    bounds = [0, *cuts, len(body)]
    messages = [
        {"type": "http.request", "body": body[a:b], "more_body": i < len(bounds) - 2}
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    async def read_all() -> None:
        checked = _checked(receive)  # type: ignore[arg-type]
        while True:
            msg = await checked()
            if not msg.get("more_body"):
                return

    asyncio.run(read_all())


@pytest.mark.parametrize(("body", "param"), BAD)
def test_a_bad_string_is_found_wherever_the_chunks_are_cut(body: bytes, param: str) -> None:
    for cut in range(1, len(body)):
        with pytest.raises(BadText) as caught:
            run_through(body, [cut])
        assert caught.value.param == param and caught.value.status_code == 400
    with pytest.raises(BadText):
        run_through(body, list(range(1, len(body))))  # one byte per chunk


@pytest.mark.parametrize("body", GOOD)
def test_good_text_passes(body: bytes) -> None:
    run_through(body, [])
    run_through(body, list(range(1, min(len(body), 60))))
    assert bad_json_field(body) is None


def test_a_deeply_nested_body_does_not_exhaust_the_stack() -> None:
    deep: object = "x\x00"
    for _ in range(50_000):
        deep = [deep]
    assert bad_field(deep) == ".".join(["0"] * 50_000)
    assert bad_json_field(b"[" * 100_000 + b"]" * 100_000) is None  # the route answers that


def test_clean_text_replaces_what_cannot_be_stored() -> None:
    assert clean_text("a\x00b\ud800c\U0001f525") == "a\ufffdb\ufffdc\U0001f525"
    assert clean_text("a\x00b", "") == "ab"
