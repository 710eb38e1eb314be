"""The `hearth` command line: the composition root. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.settings import SettingsError, get_settings

from . import access, backup, bench, commands, docs, doctor, llm, reindex, up
from .lifeline import watch_lifeline

MODULES = (up, llm, commands, docs, access, bench, backup, doctor, reindex)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="Private RAG over your documents.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    watch_lifeline()  # a child of `hearth up` stops when it is gone, however it went
    args = build_parser().parse_args(argv)
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
