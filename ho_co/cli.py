"""`ho-co` command line: parse, call one function of a client package, print.

Each subcommand is one small `_cmd_*` function that declares its arguments and returns the
function to call; heavy imports (rl4co, transformers, solvers) happen inside the handler so
`ho-co --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

Handler = Callable[[argparse.Namespace], int | None]


def _cmd_version(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the ho-co version")

    def run(args: argparse.Namespace) -> int:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(version("ho-co"))
        except PackageNotFoundError:  # running from a checkout without install
            from ho_co import __version__

            print(__version__)
        return 0

    p.set_defaults(handler=run)


# Subcommands register here, one line each, in the order `ho-co --help` lists them.
COMMANDS = [
    _cmd_version,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ho-co",
        description="High-order layers for neural combinatorial optimization.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
