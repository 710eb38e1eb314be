"""`hearth search`: the /v1/search code path from the command line, with its filter flags."""

from __future__ import annotations

import json

import psycopg
import pytest

from cli.main import main
from retrieval import index
from tests.factories import make_document


@pytest.fixture
def indexed(db: psycopg.Connection, embedder, pg_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for path, collection, text in (
        ("/h/boat.md", "boats", "The boat is moored at pier 7 for the winter."),
        ("/h/oars.txt", "boats", "Oars are stored in the shed beside the boat."),
        ("/h/garden.md", "garden", "Tomatoes need full sun and daily watering."),
    ):
        doc = make_document(path, [text], title=path.rsplit("/", 1)[-1])
        doc.collection = collection
        index.replace_chunks(db, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    monkeypatch.setenv("DATABASE_URL", pg_url)
    return db


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert main(["search", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["data"]


def test_search_prints_ranked_passages(indexed, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["search", "where is the boat moored", "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[1] ") and "/h/boat.md" in out and "pier 7" in out


def test_flags_reach_the_filters(indexed, capsys) -> None:  # type: ignore[no-untyped-def]
    hits = run_json(capsys, "boat", "--mode", "lexical", "-k", "5")
    assert {h["path"] for h in hits} == {"/h/boat.md", "/h/oars.txt"}
    assert hits[0]["rank"] == 1 and set(hits[0]) >= {"score", "document_id", "char_start"}
    hits = run_json(capsys, "boat", "--type", "txt")
    assert [h["path"] for h in hits] == ["/h/oars.txt"]
    hits = run_json(capsys, "watering", "--collection", "boats", "--collection", "garden")
    assert hits[0]["path"] == "/h/garden.md"
    assert run_json(capsys, "boat", "--path-prefix", "/elsewhere/") == []
    assert run_json(capsys, "boat", "--after", "2999-01-01") == []
    assert run_json(capsys, "boat", "--meta", "owner=ann") == []


def test_bad_flags_are_clear_errors(indexed, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["search", "boat", "--rerank"]) == 2
    assert "RERANK_MODEL" in capsys.readouterr().err
    assert main(["search", "boat", "--after", "last tuesday"]) == 2
    assert "modified_after" in capsys.readouterr().err
