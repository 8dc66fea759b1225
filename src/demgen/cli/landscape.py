"""`demgen landscape`: a fully artificial landscape from a DEM -> image checkpoint."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from demgen.cli.common import add_precision_argument

MIN_SIZE = 64  # demgen.landscape.MIN_SIZE, kept here so --help needs no torch import


def seed_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def size_int(text: str) -> int:
    """argparse type: a whole number of pixels >= 64."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"expected at least {MIN_SIZE} pixels, got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    from demgen.data.synth.config import RELIEFS

    p = sub.add_parser(
        "landscape",
        help="a fully artificial landscape: procedural terrain painted by a DEM -> image model",
        description=(
            "Generate a terrain from --seed and write it as OUT/dem.tif (float32 metres, "
            "EPSG:32633, an origin drawn from the seed, the checkpoint's pixel size); the "
            "DEM -> image CKPT (dem2image or dem2image_pix2pix) paints OUT/image.tif (the "
            "bands and dtype it was trained on, e.g. uint16 reflectance x 10000, B2 B3 B4 "
            "B8), and OUT/view.html drapes that image on the terrain in an offline 3D view "
            "(true colour B4 B3 B2, 2-98 % stretch). --terrain synth is the synthetic "
            "world's eroded terrain (the DTM of `demgen synth` for that seed and relief); "
            "perlin is plain Perlin fBm as in ImageToDEM's artificial landscapes, over the "
            "same relief's height range. The same seed gives byte-identical files (same "
            "machine and --precision). The folder appears only when complete; checkpoints "
            "that do not read a DEM and write an image are refused."
        ),
    )
    p.add_argument("out", type=Path, metavar="OUT", help="output folder (new, or empty)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        metavar="CKPT",
        help="DEM -> image checkpoint (.ckpt)",
    )
    p.add_argument(
        "--seed", type=seed_int, default=0, help="terrain seed, any whole number >= 0 (0)"
    )
    p.add_argument(
        "--relief",
        choices=RELIEFS,
        default="hills",
        help="height range of the synthetic presets: plains -40..300 m, hills -150..1500 m, "
        "alpine 200..4000 m (hills)",
    )
    p.add_argument(
        "--size", type=size_int, default=512, help=f"pixels per side, >= {MIN_SIZE} (512)"
    )
    p.add_argument(
        "--terrain",
        choices=("synth", "perlin"),
        default="synth",
        help="synth: eroded terrain of the synthetic world; perlin: plain fBm (synth)",
    )
    add_precision_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demgen.landscape import make_landscape

    t0 = time.time()
    files = make_landscape(
        args.out,
        args.checkpoint,
        seed=args.seed,
        relief=args.relief,
        size=args.size,
        terrain=args.terrain,
        overwrite=args.overwrite,
        progress=not args.quiet,
        precision=args.precision,
    )
    print(f"landscape ({args.terrain} {args.relief}, seed {args.seed}, {args.size} px) "
          f"in {time.time() - t0:.1f} s:")  # fmt: skip
    for path in files.values():
        print(f"  {path}")
    return 0
