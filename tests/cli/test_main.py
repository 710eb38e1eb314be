"""`hearth`'s composition root: each command is defined by the module cli.main.COMMANDS names,
and a command imports only that module (the access and token commands start without numpy,
httpx or the evaluation code)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from cli.main import COMMANDS, build_parser, parse_args


def commands_of(parser: argparse.ArgumentParser) -> list[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_the_table_names_what_each_module_defines(module: str) -> None:
    first = COMMANDS[module][0]
    assert commands_of(build_parser(first)) == list(COMMANDS[module])


def test_help_lists_every_command_in_the_table_s_order() -> None:
    assert commands_of(build_parser()) == [c for cs in COMMANDS.values() for c in cs]


def test_a_command_parses_as_it_does_on_the_whole_command_line() -> None:
    argv = ["token", "create", "--user", "ann", "--expires", "90d"]
    alone, whole = parse_args(argv), build_parser().parse_args(argv)
    assert vars(alone) == vars(whole)


def test_an_unknown_command_is_refused_with_the_whole_list(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["tokens", "list"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tokens'" in err and "'token'" in err and "'doctor'" in err


def test_token_and_user_commands_do_not_import_the_heavy_packages() -> None:
    probe = (
        "import json, sys\n"
        "from cli.main import parse_args\n"
        "for argv in (['token', 'list'], ['user', 'list'], ['ls']):\n"
        "    parse_args(argv)\n"
        "heavy = ('numpy', 'httpx', 'torch', 'celery', 'cli.evaluation.cli')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []
