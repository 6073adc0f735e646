"""Command-line entry point: `automodel <command> ...`.

Each command lives in automodel/commands/<name>.py and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
This is the only place where exceptions become exit codes and where logging
is configured.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from automodel import __version__
from automodel.errors import AutomodelError

# Order is the order shown in --help.
COMMANDS = (
    "fit", "resume", "show", "diff", "inspect", "run", "report", "predict", "export", "serve", "zero_shot", "datasets",
    "weights",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automodel",
        description="Turn a folder of labelled images into a trained, evaluated and exported image classifier.",
        epilog="Start with: automodel inspect ./dataset, then automodel fit ./dataset --iters 20",
    )
    parser.add_argument("--version", action="version", version=f"automodel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        # A command that fails to import is a broken install: fail loudly, never drop it.
        importlib.import_module(f"automodel.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AutomodelError as err:
        print(f"automodel: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("automodel: interrupted.", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a folder that cannot be written: say which, without a traceback
        print(
            f"automodel: error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
