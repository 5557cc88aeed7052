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


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl data synth ...` writes synthetic scenes and/or a preview; `adapmtl data check DIR` validates."""
    parser = subparsers.add_parser("data", help="write synthetic datasets, check dataset folders")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    synth = commands.add_parser("synth", help="render synthetic scenes to disk (NYU-v2 or Taskonomy format)")
    synth.add_argument("--out", help="folder to write the dataset into")
    synth.add_argument("--format", choices=["nyuv2", "taskonomy"], default="nyuv2")
    synth.add_argument("--n", type=int, default=1000, help="number of scenes (default 1000)")
    synth.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--preview", help="also write a PNG grid of a few scenes here")

    def run_synth(args: argparse.Namespace) -> int:
        from adapmtl import data

        if args.out is None and args.preview is None:
            raise data.DatasetError("nothing to do: pass --out DIR and/or --preview FILE.png")
        if args.out is not None:
            root = data.write_synthetic(args.out, args.format, n=args.n, size=tuple(args.size), seed=args.seed)
            print(f"wrote {args.n} scenes ({args.size[0]}x{args.size[1]}, {args.format} format) to {root}")
        if args.preview is not None:
            scenes = data.SyntheticScenes(min(args.n, 6), tuple(args.size), seed=args.seed)
            print(f"wrote {data.save_preview([scenes[i] for i in range(len(scenes))], args.preview)}")
        return 0

    synth.set_defaults(run=run_synth)

    check = commands.add_parser("check", help="validate a dataset folder and print a summary")
    check.add_argument("dir", help="dataset folder (NYU-v2 AdaShare or MTAN format, or Taskonomy)")
    check.add_argument("--limit", type=int, default=None, help="read at most this many samples per split")

    def run_check(args: argparse.Namespace) -> int:
        from adapmtl import data

        report = data.check_dataset(args.dir, limit=args.limit)
        print(report.summary())
        return 0 if report.ok else 1

    check.set_defaults(run=run_check)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_data]


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
