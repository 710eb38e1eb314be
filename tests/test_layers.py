"""Imports flow one way: core <- retrieval <- ingest <- workers <- api <- cli <- bench.

api is HTTP and the chat turn; cli the command line and process supervision (`hearth up`);
bench the benchmarks, which drive both. tests may import anything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["core", "retrieval", "ingest", "workers", "api", "cli", "bench"]
FRAMEWORKS = {"fastapi", "starlette", "uvicorn", "celery", "kombu"}
# frameworks each room may import (api is the composition root; cli and bench start its servers)
ALLOWED_FRAMEWORKS = {
    "core": set(),
    "retrieval": set(),
    "ingest": set(),
    "workers": {"celery", "kombu"},
    "api": FRAMEWORKS,
    "cli": FRAMEWORKS,
    "bench": FRAMEWORKS,
}


def imports_of(path: Path, room: str) -> set[str]:
    """Top-level names a module imports; a relative import counts as its own room."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add(room)
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for room in ORDER:
        allowed_rooms = set(ORDER[: ORDER.index(room) + 1])
        for path in sorted((root / room).rglob("*.py")):
            for mod in imports_of(path, room):
                if mod in ORDER and mod not in allowed_rooms:
                    bad.append(f"{path.relative_to(root)} imports {mod}")
                if mod in FRAMEWORKS and mod not in ALLOWED_FRAMEWORKS[room]:
                    bad.append(f"{path.relative_to(root)} imports framework {mod}")
    return bad


def test_rooms_import_only_downstream() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("room", "line", "expected"),
    [
        ("ingest", "from api.app import create_app", "ingest/bad.py imports api"),
        ("core", "import fastapi", "core/bad.py imports framework fastapi"),
        (
            "retrieval",
            "from celery import shared_task",
            "retrieval/bad.py imports framework celery",
        ),
        ("core", "from workers import tasks", "core/bad.py imports workers"),
        ("api", "from cli.up import main", "api/bad.py imports cli"),
        ("cli", "from bench import cli", "cli/bad.py imports bench"),
        ("core", "from core.embedded import x\nimport bench.harness", "core/bad.py imports bench"),
    ],
)
def test_checker_catches_a_wrong_import(
    tmp_path: Path, room: str, line: str, expected: str
) -> None:
    for r in ORDER:
        (tmp_path / r).mkdir()
    (tmp_path / room / "bad.py").write_text(line + "\n")
    assert violations(tmp_path) == [expected]
