"""`demgen export`: the generator as TorchScript or ONNX, with its normalization."""

from __future__ import annotations

import argparse
from pathlib import Path

from demgen.errors import DemgenError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint's model to TorchScript or ONNX",
        description=(
            "Write CHECKPOINT's network as TorchScript (.pt) or ONNX (.onnx), and beside it "
            "OUTPUT.json with the task's contract (named input and output layers with their "
            "units), its input channels in order (image bands, or a refinement model's "
            "stacked layers) and their normalizations, and how to turn its output into "
            "metres. Every task exports (regression, pix2pix, drpan, refine). ONNX "
            "needs the 'onnx' package."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="model checkpoint (.ckpt)")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="output file (default: CHECKPOINT with .pt or .onnx)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demgen.export import SUFFIX, export_model
    from demgen.tasks.registry import load_task

    out = args.output or args.checkpoint.with_suffix(SUFFIX[args.format])
    if out.exists() and not args.overwrite:
        raise DemgenError(f"{out} already exists (pass --overwrite to replace it)")
    export_model(load_task(args.checkpoint), out, args.format)
    print(f"wrote {out} and {out.name}.json")
    return 0
