"""Shared pieces of the command line: the one-line-error parser and argument types."""

from __future__ import annotations

import argparse

from demgen.precision import PRECISIONS

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


PRECISION_HELP = (
    "auto (default): bf16 autocast where it is faster than fp32 (GPUs with bf16, CPUs "
    "with AMX), else fp32; bf16 forces bf16 autocast; 32 forces fp32"
)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--precision auto|bf16|32`` option shared by demo and predict."""
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
