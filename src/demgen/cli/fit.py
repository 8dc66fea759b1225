"""`demgen fit`: train a task from a LightningCLI YAML config (``demgen.training.fit``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from demgen.cli.common import EXIT_USAGE


def _passthrough(args: list[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
    """Everything after ``fit`` goes to LightningCLI's own parser unparsed."""
    ns = namespace if namespace is not None else argparse.Namespace()
    ns.fit_args = list(args or [])
    ns.func = run
    return ns, []


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "fit",
        help="train a task from a YAML config (LightningCLI: --config, --trainer.*, --model.*)",
        add_help=False,
    )
    # LightningCLI parses (and documents, with --help) the arguments itself.
    parser.parse_known_args = _passthrough  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from jsonargparse import ArgumentError

    from demgen.training import first_line, fit

    try:
        fit(args.fit_args)
    except ArgumentError as exc:
        print(f"demgen fit: error: {first_line(exc)} (see demgen fit --help)", file=sys.stderr)
        return EXIT_USAGE
    return 0
