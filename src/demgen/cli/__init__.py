"""Command line: parses arguments and calls the Python API; nothing else lives here.

Each subcommand is a module of this package with ``add_parser(sub)``; its parser
sets ``func``. Every user error prints one line ``demgen <cmd>: error: ...`` and
exits with code 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from demgen import __version__
from demgen.cli import (
    demo,
    download,
    evaluate,
    export,
    fit,
    info,
    landscape,
    lidar,
    points,
    predict,
    prepare,
    synth,
    test,
    view,
)
from demgen.cli.common import EXIT_USAGE, Parser
from demgen.errors import DemgenError

EXIT_INTERNAL = 1

SUBCOMMANDS = (
    synth,
    download,
    prepare,
    info,
    demo,
    fit,
    predict,
    evaluate,
    test,
    export,
    view,
    landscape,
    lidar,
    points,
)


def build_parser() -> Parser:
    """The ``demgen`` parser with all subcommands."""
    parser = Parser(
        prog="demgen",
        description=(
            "Satellite imagery to Digital Elevation Models: synthetic worlds, training, "
            "georeferenced prediction and evaluation in metres."
        ),
    )
    parser.add_argument("--version", action="version", version=f"demgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``demgen`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except DemgenError as exc:
        print(f"demgen {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"demgen {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # permissions, full disk, missing folders: the user can fix these
        print(f"demgen {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if os.environ.get("DEMGEN_DEBUG"):
            raise
        print(
            f"demgen {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(set DEMGEN_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
