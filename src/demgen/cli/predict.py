"""`demgen predict`: a checkpoint applied to whole scenes, written as GeoTIFFs in metres."""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

from demgen.cli.common import add_precision_argument, positive_int
from demgen.errors import DemgenError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict heights for whole scenes from a checkpoint",
        description=(
            "Apply CHECKPOINT to each INPUT image (any size; read window by window) and write "
            "float32 heights in metres with the input's CRS and transform. Windows overlap "
            "and are blended with a smooth weight, so there are no seams. The bands, "
            "normalization and training pixel size stored in the checkpoint are applied; "
            "pixels that are nodata in the input are nodata (-9999) in the output. One input: "
            "OUTPUT is the file. Several inputs or a glob: OUTPUT is a folder and each result "
            "is OUTPUT/<input name>_dem.tif. Files appear only when complete. Refinement "
            "checkpoints take their stacked inputs by name: INPUT is the image (ortho1) and "
            "each other layer is --layer NAME=PATH; the error lists the names a checkpoint "
            "needs."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="model checkpoint (.ckpt) from demo or fit")
    p.add_argument("inputs", nargs="+", help="image raster(s); quoted globs are expanded")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file or folder")
    p.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="refinement checkpoints: a named input layer (initial_dsm, ortho2, "
        "triangulation_error, ...); INPUT is the image (ortho1)",
    )
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap 0..0.9 (0.25)")
    p.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help="window size in pixels (default: twice the training chip size; the chip size "
        "for relative (per-chip) and refinement models)",
    )
    p.add_argument("--batch-size", type=positive_int, default=4, help="windows per batch (4)")
    p.add_argument(
        "--tta",
        action="store_true",
        help="average the 8 flips/rotations; band 2 = their std (uncertainty, m)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="coarse DEM anchoring relative (global-shift) models per window",
    )
    p.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    add_precision_argument(p)
    p.add_argument(
        "--any-resolution",
        action="store_true",
        help="predict even if the pixel size differs from the training data's",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Existing files as given; anything else is a glob that must match at least one file."""
    out: list[Path] = []
    for pat in patterns:
        if Path(pat).exists():
            out.append(Path(pat))
            continue
        hits = sorted(glob.glob(pat))
        if not hits:
            raise DemgenError(f"{pat}: no such file")
        out.extend(Path(h) for h in hits)
    return out


def parse_layers(items: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` items as a dict; each file must exist."""
    layers: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DemgenError(f"--layer expects NAME=PATH, got {item!r}")
        if not Path(path).exists():
            raise DemgenError(f"{path}: no such file")
        layers[name] = Path(path)
    return layers


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.overlap <= 0.9:
        raise DemgenError(f"--overlap must be between 0 and 0.9, got {args.overlap}")
    inputs = expand_inputs(args.inputs)
    if not args.checkpoint.exists():
        raise DemgenError(f"{args.checkpoint}: no such checkpoint")

    from demgen.inference.scene import (
        load_task,
        output_paths,
        predict_refine_scene,
        predict_scene,
    )

    outputs = output_paths(inputs, args.output)
    existing = [o for o in outputs if o.exists()]
    if existing and not args.overwrite:
        raise DemgenError(f"{existing[0]} already exists (pass --overwrite to replace it)")
    task = load_task(args.checkpoint)
    layers = parse_layers(args.layer)
    if getattr(task, "task_name", "") == "refine":
        if len(inputs) != 1:
            raise DemgenError("a refinement checkpoint takes one image; give other layers "
                              "with --layer NAME=PATH")  # fmt: skip
        t0 = time.time()
        predict_refine_scene(
            task, {"ortho1": inputs[0], **layers}, outputs[0], window=args.window,
            overlap=args.overlap, batch_size=args.batch_size, precision=args.precision,
            tta=args.tta, cog=args.cog, any_resolution=args.any_resolution,
            progress=not args.quiet,
        )  # fmt: skip
        print(f"wrote {outputs[0]} ({time.time() - t0:.1f} s)")
        return 0
    if layers:
        raise DemgenError("--layer is only for refinement checkpoints")
    for src, dst in zip(inputs, outputs, strict=True):
        t0 = time.time()
        predict_scene(
            task,
            src,
            dst,
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            precision=args.precision,
            tta=args.tta,
            reference=args.reference,
            cog=args.cog,
            any_resolution=args.any_resolution,
            progress=not args.quiet,
        )
        print(f"wrote {dst} ({time.time() - t0:.1f} s)")
    return 0
