"""The answer check (api/answercheck.py): which sentences the passages support, and what a
stream sees of it."""

from __future__ import annotations

import pytest

from api.answercheck import (
    NOT_FOUND_MARK,
    SentenceGate,
    Support,
    check_answer,
    drop_marked,
    judge,
    mark,
)
from core.types import Passage

REFUSAL = "NOT COVERED"


def passage(text: str, title: str = "doc", n: int = 1) -> Passage:
    return Passage(n, n, f"/docs/{title}.txt", title, text, (), None, 0, len(text), 1.0)


BOILER = passage(
    "The pressure gauge should read between 1.0 and 1.5 bar when the heating is cold. Press"
    " the reset button and hold it for 5 seconds. Contents cover up to £45,000.",
    "boiler-manual",
)
DENTIST = passage(
    "Your check-up with Dr Okafor is on Tuesday 8 April at 3:40 pm. Late cancellations are"
    " charged a £30 fee.",
    "dentist",
    2,
)
PASSAGES = [BOILER, DENTIST]
SUPPORT = Support.of(PASSAGES)


@pytest.mark.parametrize(
    "sentence",
    [
        "The gauge should read between 1.0 and 1.5 bar when the heating is cold [1].",
        "Hold the reset button for 5 seconds.",
        "The gauge reads 1 to 1.5 bar when cold.",  # 1.0 written as 1
        "Contents are covered up to £45000.",  # thousands separator dropped
        "The check-up with Dr. Okafor is at 3:40 pm on 8 April.",
    ],
)
def test_supported_sentences(sentence: str) -> None:
    assert judge(sentence, SUPPORT) is True


@pytest.mark.parametrize(
    "sentence",
    [
        "The gauge should read 2.5 bar when the heating is cold [1].",  # a number no passage has
        "Hold the reset button for 50 seconds.",
        "The boiler was made in Germany by Siemens engineers.",  # words no passage has
        "Call the claims line on 0800 999 1234.",
    ],
)
def test_unsupported_sentences(sentence: str) -> None:
    assert judge(sentence, SUPPORT) is False


@pytest.mark.parametrize(
    "sentence", ["Sure!", "Yes.", "The documents do not cover this.", "I could not find that."]
)
def test_filler_and_refusals_are_not_judged(sentence: str) -> None:
    assert judge(sentence, SUPPORT) is None


def test_mark_drops_the_citation_and_keeps_the_full_stop() -> None:
    assert mark("It is 2.5 bar [1]. ") == f"It is 2.5 bar {NOT_FOUND_MARK}. "
    assert mark("It is 2.5 bar") == f"It is 2.5 bar {NOT_FOUND_MARK}"


def test_mark_mode_marks_only_the_unsupported_sentence() -> None:
    text = "Hold the reset button for 5 seconds [1]. The boiler was made by Siemens in 1990 [1]."
    out, gate = check_answer(text, PASSAGES, "mark", REFUSAL)
    assert out == (
        f"Hold the reset button for 5 seconds [1]. The boiler was made by Siemens in 1990 "
        f"{NOT_FOUND_MARK}."
    )
    assert (gate.supported, gate.unsupported, gate.refused) == (1, 1, False)


def test_withhold_mode_leaves_the_unsupported_sentence_out() -> None:
    text = "The boiler was made by Siemens in 1990. Hold the reset button for 5 seconds [1]."
    out, _ = check_answer(text, PASSAGES, "withhold", REFUSAL)
    assert out == "Hold the reset button for 5 seconds [1]."


@pytest.mark.parametrize("mode", ["mark", "withhold"])
def test_a_wholly_unsupported_answer_becomes_the_refusal(mode: str) -> None:
    text = "Your car insurance excess is £750 [1]. It renews in 2031 [2]."
    out, gate = check_answer(text, PASSAGES, mode, REFUSAL)  # type: ignore[arg-type]
    assert out == REFUSAL and gate.refused


def test_the_models_own_refusal_stays() -> None:
    text = "Sure. The documents do not cover this."
    out, gate = check_answer(text, PASSAGES, "mark", REFUSAL)
    assert out == text and not gate.refused


def test_off_changes_nothing() -> None:
    text = "The boiler was made by Siemens in 1990."
    assert check_answer(text, PASSAGES, "off", REFUSAL)[0] == text


def test_no_passages_supports_nothing() -> None:
    out, gate = check_answer("The fee is £30 for late cancellations.", [], "mark", REFUSAL)
    assert out == REFUSAL and gate.refused


@pytest.mark.parametrize("mode", ["mark", "withhold"])
def test_a_stream_gives_the_same_text_as_the_whole_answer(mode: str) -> None:
    text = (
        "Hold the reset button for 5 seconds. [1] The late cancellation fee is £30 [2].\n"
        "The boiler was made by Siemens in 1990. Dr. Okafor sees you on 8 April."
    )
    whole, _ = check_answer(text, PASSAGES, mode, REFUSAL)  # type: ignore[arg-type]
    for size in (1, 2, 3, 7):
        gate = SentenceGate(PASSAGES, mode, REFUSAL)  # type: ignore[arg-type]
        out = "".join(gate.feed(text[i : i + size]) for i in range(0, len(text), size))
        assert out + gate.finish() == whole


def test_a_stream_releases_each_sentence_once_it_is_whole() -> None:
    gate = SentenceGate(PASSAGES, "mark", REFUSAL)
    assert gate.feed("Hold the reset button for 5 seconds") == ""
    assert gate.feed(". ") == ""  # a marker may still follow
    assert gate.feed("[") == ""
    assert gate.feed("1] The") == "Hold the reset button for 5 seconds. [1] "
    assert gate.feed(" fee is £30.") == ""
    assert gate.finish() == "The fee is £30."


def test_a_stream_holds_unsupported_text_until_something_is_supported() -> None:
    gate = SentenceGate(PASSAGES, "mark", REFUSAL)
    assert gate.feed("The boiler was made by Siemens in 1990. Hold the") == ""
    released = gate.feed(" reset button for 5 seconds. Thanks")
    assert released == (
        f"The boiler was made by Siemens in 1990 {NOT_FOUND_MARK}. "
        "Hold the reset button for 5 seconds. "
    )


def test_marked_sentences_are_dropped_from_history() -> None:
    text = "Hold the reset button for 5 seconds [1]. The boiler was made by Siemens in 1990."
    out, _ = check_answer(text, PASSAGES, "mark", REFUSAL)
    assert NOT_FOUND_MARK in out
    assert drop_marked(out) == "Hold the reset button for 5 seconds [1]. "
    assert drop_marked(f"A is 1. B is 2 {NOT_FOUND_MARK}. C is 3.") == "A is 1. C is 3."
    assert drop_marked("No marks here. None.") == "No marks here. None."


def test_dropping_marks_is_linear_in_what_a_client_sends() -> None:
    # no sentence ends before each mark: a backtracking pattern would read it all for every one
    text = ("word " * 2000 + NOT_FOUND_MARK) * 200
    assert drop_marked(text) == ""
