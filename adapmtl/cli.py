"""The `adapmtl` command. Thin: it parses arguments, then calls the library.

Each subcommand is one `_add_<name>` function that registers its parser and the
library call it makes, so a new capability adds one function here and nothing else.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import adapmtl


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adapmtl",
        description="Adaptive soft-threshold pruning of multitask networks (AdapMTL).",
    )
    parser.add_argument("--version", action="version", version=f"adapmtl {adapmtl.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except adapmtl.errors.AdapMTLError as error:
        print(f"adapmtl {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
