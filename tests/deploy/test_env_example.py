""".env.example against docker-compose.yml and Settings: it names every variable compose reads,
nothing Hearth does not know, the same defaults, and it cannot start compose unedited."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from core.settings import Settings
from tests.test_compose import (
    COMPOSE_FILE,
    REQUIRED_VARS,
    MissingVariableError,
    interpolate_all,
    variable_references,
)

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
# `NAME=value` (set) or `# NAME=value` (optional, showing its default); prose never looks like it
_BRACED = re.compile(r"\$\{([A-Za-z_]\w*)(?:(:?[-?+])([^}]*))?\}")
_ENTRY = re.compile(r"^(?P<comment>#\s?)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def parse_env_example(text: str) -> dict[str, tuple[str, bool]]:
    """`{NAME: (value, active)}`; active is False for a commented-out line."""
    entries: dict[str, tuple[str, bool]] = {}
    for line in text.splitlines():
        match = _ENTRY.match(line.strip())
        if match:
            name = match["name"]
            assert name not in entries, f"{name} is listed twice"
            entries[name] = (match["value"], not match["comment"])
    return entries


def compose_variables(compose: object) -> dict[str, set[tuple[str, str]]]:
    """`{NAME: {(operator, argument), ...}}` for every `${NAME...}` in docker-compose.yml."""
    found: dict[str, set[tuple[str, str]]] = {}

    def walk(node: object) -> None:
        if isinstance(node, str):
            for match in _BRACED.finditer(node.replace("$$", "")):
                found.setdefault(match[1], set()).add((match[2] or "", match[3] or ""))
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(compose)
    return found


Example = dict[str, tuple[str, bool]]


def missing_variables(compose: object, example: Example) -> list[str]:
    return sorted({name for name, _ in variable_references(compose)} - set(example))


def unknown_entries(compose: object, example: Example) -> list[str]:
    referenced = {name for name, _ in variable_references(compose)}
    fields = {name.upper() for name in Settings.model_fields}
    return sorted(set(example) - referenced - fields)


def default_mismatches(compose: object, example: Example) -> list[str]:
    """An optional variable is commented out and shows exactly compose's `:-` default."""
    wrong = []
    for name, uses in compose_variables(compose).items():
        defaults = {arg for op, arg in uses if op in (":-", "-")}
        value, active = example.get(name, ("", False))
        if defaults and (active or {value} != defaults):
            wrong.append(f"{name}: example {value!r} (active={active}), compose default {defaults}")
    return wrong


@pytest.fixture
def compose() -> object:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture
def example() -> Example:
    return parse_env_example(ENV_EXAMPLE.read_text(encoding="utf-8"))


def test_every_compose_variable_is_in_env_example(compose: object, example: Example) -> None:
    assert variable_references(compose), "docker-compose.yml references no variables?"
    assert missing_variables(compose, example) == []


def test_every_entry_is_a_setting_or_a_compose_variable(compose: object, example: Example) -> None:
    assert unknown_entries(compose, example) == []


def test_optional_entries_show_the_compose_default(compose: object, example: Example) -> None:
    assert default_mismatches(compose, example) == []


def test_required_entries_are_empty_so_compose_refuses_an_unedited_copy(
    compose: object, example: Example
) -> None:
    for name in REQUIRED_VARS:
        assert example[name] == ("", True), name
    env = {name: value for name, (value, active) in example.items() if active}
    with pytest.raises(MissingVariableError):
        interpolate_all(compose, env)


def test_entries_that_are_settings_pass_settings_validation(example: Example) -> None:
    """The defaults shown would be accepted by Hearth (types, ranges, CHUNK_OVERLAP < SIZE)."""
    values = {
        name.lower(): value
        for name, (value, _) in example.items()
        if name.lower() in Settings.model_fields and value
    }
    assert "chunk_size" in values
    Settings.model_validate(values)


def test_parser_reads_entries_not_prose() -> None:
    parsed = parse_env_example("# prose: see A=B below\nFOO=\n# BAR=1\n#   not an entry=1\n")
    assert parsed == {"FOO": ("", True), "BAR": ("1", False)}


@pytest.mark.parametrize(
    ("old", "new", "check", "expected"),
    [
        ("# TOP_K=5\n", "", missing_variables, "TOP_K"),
        ("# TOP_K=5\n", "# TOP_K=5\n# TOP_KK=5\n", unknown_entries, "TOP_KK"),
        ("# TOP_K=5\n", "# TOP_K=6\n", default_mismatches, "TOP_K: example '6'"),
        ("# TOP_K=5\n", "TOP_K=5\n", default_mismatches, "TOP_K: example '5' (active=True)"),
    ],
)
def test_checks_catch_a_broken_copy(
    compose: object,
    old: str,
    new: str,
    check: Callable[[object, Example], list[str]],
    expected: str,
) -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    assert text.count(old) == 1
    assert check(compose, parse_env_example(text)) == []
    found = check(compose, parse_env_example(text.replace(old, new)))
    assert any(expected in v for v in found), found
