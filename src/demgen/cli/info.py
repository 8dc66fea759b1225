"""`demgen info`: summarize a chip store."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="summarize a chip store (chips per split, bands, statistics, area)",
        description=(
            "Print a summary of a chip store written by `demgen prepare`: chips per split "
            "(and folds), bands and their stored dtype, height unit, normalization "
            "statistics, valid-pixel fractions, and the area and scenes covered."
        ),
    )
    p.add_argument("store", type=Path, help="chip store folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demgen.data.chips import ChipStore, summary

    print(summary(ChipStore(args.store)))
    return 0
