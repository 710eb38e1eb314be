"""Every `hearth` command works after `make run`'s install (the main dependencies, without the
dev extras), or says in one line what to install (issue 18: `hearth bench ingest` died with
ModuleNotFoundError: reportlab).

"Without the dev extras" is simulated in this dev venv: the distributions only the dev extras
bring (read from pyproject.toml, closed over the installed packages' own requirements) are made
unimportable with None in sys.modules, from a sitecustomize.py on PYTHONPATH, which every child
process (workers, parsers) inherits.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.api.test_evaluation import write_beir
from tests.conftest import HEARTH_ENV_VARS

REPO = Path(__file__).resolve().parents[2]
ROOMS = ("core", "retrieval", "ingest", "workers", "api", "bench")


def _closure(roots: list[Requirement]) -> set[str]:
    """Canonical names of the installed distributions `roots` pull in, extras included."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(roots)
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.distribution(req.name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            extras = ("", *req.extras)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return {name for name, _ in seen}


def _top_level(dist_name: str) -> set[str]:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return set()
    listed = dist.read_text("top_level.txt")
    if listed:
        return {t for t in listed.split() if t.isidentifier()}
    tops = set()
    for f in dist.files or []:
        first = str(f).split("/")[0].removesuffix(".py")
        if first.isidentifier() and not first.startswith("__"):
            tops.add(first)
    return tops


@cache
def dev_only_modules() -> frozenset[str]:
    """Top-level modules of the distributions that only the dev extras install."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    main = _closure([Requirement(r) for r in project["dependencies"]])
    dev = _closure([Requirement(r) for r in project["optional-dependencies"]["dev"]])
    return frozenset(m for dist in dev - main for m in _top_level(dist))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_simulated_install_leaves_out_the_dev_tools() -> None:
    """The check below is only as good as this list: the dev tools are on it, what the
    service runs on is not."""
    dev_only = dev_only_modules()
    assert {"pytest", "mypy", "openai", "playwright", "schemathesis"} <= dev_only
    assert not {"yaml", "httpx", "celery", "fastapi", "reportlab", "numpy"} & dev_only


def test_no_command_imports_a_dev_only_package() -> None:
    """Anywhere a `hearth` command can reach (function-level imports too)."""
    dev_only = dev_only_modules()
    bad = sorted(
        f"{path.relative_to(REPO)} imports {name}"
        for room in ROOMS
        for path in (REPO / room).rglob("*.py")
        for name in _imports(path) & dev_only
    )
    assert bad == []


def _blocker(tmp_path: Path, extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """An environment whose Python cannot import the dev-only packages (and `extra`)."""
    site = tmp_path / "no-dev-extras"
    site.mkdir(exist_ok=True)
    names = sorted(dev_only_modules() | extra)
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor _name in {names!r}:\n    sys.modules.setdefault(_name, None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in HEARTH_ENV_VARS}
    env["PYTHONPATH"] = str(site)
    env["HEARTH_DATA_DIR"] = str(tmp_path / "data")
    env["HEARTH_WATCH_DIR"] = str(tmp_path / "watched")
    return env


def _hearth(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{REPO}"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_missing_package_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    """An install that lacks what a command needs (here `hearth bench ingest` without
    reportlab): one line naming the package, no traceback."""
    env = _blocker(tmp_path, frozenset({"reportlab"}))
    out = _hearth(env, "bench", "ingest", "--quick", "--json", str(tmp_path / "r.json"), cwd=REPO)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "Traceback" not in text, text[-3000:]
    hints = [line for line in text.splitlines() if "needs the Python package 'reportlab'" in line]
    assert len(hints) == 1 and "pip install reportlab" in hints[0], text[-3000:]


@pytest.mark.slow
def test_the_commands_run_without_the_dev_extras(tmp_path: Path) -> None:
    """The real commands, on the embedded database, with the dev extras unimportable;
    `hearth eval` (no language model involved) never talks about an LLM backend."""
    env = _blocker(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "boiler.md").write_text(
        "# Boiler\n\nError code E-4471 means the pressure sensor failed.\n"
    )
    beir = write_beir(tmp_path / "beir")
    runs = [
        ("--help",),
        ("migrate",),
        ("ingest", "--wait", str(tmp_path / "docs" / "boiler.md")),
        ("status",),
        ("search", "pressure sensor"),
        ("ls",),
        ("token", "create"),
        ("user", "list"),
        ("collection", "list"),
        ("logs",),
        ("doctor",),  # 0 or 1 (a FAIL line) depending on what runs here; never a traceback
        ("backup", str(tmp_path / "backup.tar.gz")),
        ("reindex", "--abort"),
        ("eval", "--dataset", str(beir)),
        ("llm", "--help"),
    ]
    for args in runs:
        out = _hearth(env, *args, cwd=tmp_path)
        text = out.stdout + out.stderr
        assert "Traceback" not in text and "ModuleNotFoundError" not in text, (args, text[-3000:])
        assert out.returncode in ((0, 1) if args == ("doctor",) else (0,)), (args, text[-3000:])
        assert "out of rotation" not in text, (args, text[-3000:])
    search = _hearth(env, "search", "pressure sensor", cwd=tmp_path)
    assert "E-4471" in search.stdout
