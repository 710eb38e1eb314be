"""The `hearth` command line: the composition root. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.lifeline import watch_lifeline
from core.settings import SettingsError, get_settings

from . import access, backup, bench, commands, docs, doctor, llm, reindex, up

MODULES = (up, llm, commands, docs, access, bench, backup, doctor, reindex)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="Private RAG over your documents.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.add_parsers(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # handed on whole to `python -m bench`, which owns its options
        return argparse.Namespace(command="bench", func=bench.run_bench, args=argv[1:])
    return build_parser().parse_args(argv)


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
