"""`hearth bench answers`: its question set is right about its own library, and its scoring."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench import answers, cli
from bench.answers_set import QUESTIONS, write_library
from ingest.parse import parse_file


@pytest.mark.slow  # the whole answer library parsed (~8 s)
def test_every_answer_is_in_the_file_named_for_it_as_hearth_parses_it(tmp_path: Path) -> None:
    files = {p.name: p for p in write_library(tmp_path)}
    assert len({p.suffix for p in files.values()}) >= 8
    texts = {}
    for name, path in files.items():
        parsed = parse_file(path)
        elements = getattr(parsed, "elements", None)
        assert elements, f"{name}: {parsed}"
        texts[name] = " ".join(e.text for e in elements)
    answerable = [q for q in QUESTIONS if q.file]
    assert len(answerable) >= 24 and len(QUESTIONS) - len(answerable) >= 4
    for q in answerable:
        assert q.file in texts, q
        assert answers.has_facts(texts[q.file], q.facts), q


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("I could not find this in your documents, so I will not guess.", True),
        ("The documents do not cover this.", True),
        ("The passages don't mention a groomer.", True),
        ("The excess is £250 [1].", False),
        ("Bonfires are allowed from November to February.", False),
    ],
)
def test_refusals_are_told_from_answers(text: str, refused: bool) -> None:
    assert answers.is_refusal(text) is refused


def test_facts_need_every_group_and_any_alternative() -> None:
    facts = (("1.0",), ("1.5",))
    assert answers.has_facts("between 1.0 and  1.5 bar", facts)
    assert not answers.has_facts("about 1.5 bar", facts)
    assert answers.has_facts("Seven years", (("7 year", "seven year"),))
    assert not answers.has_facts("anything", ())


def test_configurations_parse_and_before_is_the_old_defaults() -> None:
    name, env = answers.parse_config("p:SYSTEM_PROMPT=Answer, briefly, please,ANSWER_CHECK=off")
    assert (name, env) == ("p", {"SYSTEM_PROMPT": "Answer, briefly, please", "ANSWER_CHECK": "off"})
    name, env = answers.parse_config("before:ANSWER_CHECK=mark")
    assert env == {**answers.BEFORE, "ANSWER_CHECK": "mark"}
    with pytest.raises(SystemExit):
        answers.parse_config("x:nonsense")
    ns = answers.parse_args(["--compare", "--config", "b:ANSWER_CHECK=withhold"])
    assert answers.configurations(ns) == {
        "before": answers.BEFORE,
        "now": {},
        "b": {"ANSWER_CHECK": "withhold"},
    }


def test_calibration_picks_the_threshold_that_gets_most_right() -> None:
    rows = [
        {"answerable": True, "best_similarity": s, "file_found": True, "file_first": True}
        for s in (0.5, 0.6, 0.35)
    ] + [{"answerable": False, "best_similarity": s} for s in (0.2, 0.3, 0.4)]
    c = answers.calibrate(rows)
    assert c["best_threshold"] == pytest.approx(0.3001)  # 5 of 6: 0.35 kept, 0.4 let through
    assert (c["best_right"], c["separable"]) == (5, False)


def test_scores_count_each_class_apart() -> None:
    def row(answerable: bool, **kw: object) -> dict[str, object]:
        base = {"right_file": None, "fact": None, "refused": False, "seconds": 1.0, "error": None}
        return {"answerable": answerable, **base, **kw}

    s = answers.score(
        [
            row(True, right_file=True, fact=True),
            row(True, right_file=True, fact=False, refused=True),
            row(False, refused=True),
            row(False, refused=False, seconds=3.0),
        ]
    )
    assert s["right_file_and_fact"] == {"k": 1, "n": 2, "rate": 0.5}
    assert s["false_refusal"]["k"] == 1 and s["refused_unanswerable"]["k"] == 1
    assert s["p50_answer_s"] == 1.0


def test_hearth_bench_answers_runs_it_outside_all(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Sequence[str]] = []
    monkeypatch.setattr(answers, "main", lambda argv: seen.append(argv) or 0)
    ap = argparse.ArgumentParser()
    cli.add_arguments(ap)
    assert cli.run_args(ap.parse_args(["answers", "--compare", "--json", "a.json"])) == 0
    assert seen == [["--json", "a.json", "--compare"]]
    assert "answers" not in cli.BENCHES
