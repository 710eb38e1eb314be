"""The `hearth` command line: the composition root. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from core.lifeline import watch_lifeline
from core.settings import SettingsError, get_settings

# Each module under cli/ and the commands its add_parsers defines, in the order `hearth --help`
# lists them. A command imports only its own module: `hearth token list` does not pay for numpy,
# httpx or the evaluation code (tests/cli/test_main.py holds this table to what the modules add).
COMMANDS: dict[str, tuple[str, ...]] = {
    "up": ("up",),
    "llm": ("llm",),
    "commands": ("migrate", "serve-api", "beat", "watch", "worker", "status", "ingest", "token"),
    "search": ("search", "eval"),
    "docs": ("ls",),
    "access": ("user", "collection", "logs"),
    "bench": ("bench",),
    "backup": ("backup", "restore"),
    "doctor": ("doctor",),
    "reindex": ("reindex",),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or only the module that defines command `only`."""
    parser = argparse.ArgumentParser(prog="hearth", description="Private RAG over your documents.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, commands in COMMANDS.items():
        if only is None or only in commands:
            importlib.import_module(f"{__package__}.{name}").add_parsers(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # handed on whole to `python -m bench`, which owns its options
        from .bench import run_bench

        return argparse.Namespace(command="bench", func=run_bench, args=argv[1:])
    known = bool(argv) and any(argv[0] in commands for commands in COMMANDS.values())
    return build_parser(argv[0] if known else None).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    watch_lifeline()  # a child of `hearth up` stops when it is gone, however it went
    args = parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:  # an install without what this command needs
        print(f"hearth: {missing_module(exc)}", file=sys.stderr)
        return 2


def missing_module(exc: ModuleNotFoundError) -> str:
    """One line saying what to install, for a command that imports a package that is absent."""
    name = (exc.name or str(exc)).split(".")[0]
    return (
        f"this command needs the Python package {name!r}, which is not installed: "
        f"`pip install {name}` in Hearth's environment (or `make install-dev` in a checkout)"
    )


if __name__ == "__main__":
    sys.exit(main())
