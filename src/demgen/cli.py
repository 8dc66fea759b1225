"""Command line: parses arguments and calls the Python API; nothing else lives here.

Every user error prints one line ``demgen <cmd>: error: ...`` and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from demgen import __version__
from demgen.errors import DemgenError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _add_synth(sub: argparse._SubParsersAction) -> None:
    from demgen.data.synth import RELIEFS

    p = sub.add_parser(
        "synth",
        help="write synthetic Sentinel-2-like scenes over eroded terrain",
        description=(
            "Write K georeferenced scenes as OUT_DIR/scene_000, scene_001, ... Each holds "
            "dtm.tif and dsm.tif (float32 metres), image.tif (uint16 reflectance x 10000, "
            "bands B2 B3 B4 B8), landcover.tif, clouds.tif and scene.json. Scene i uses "
            "seed S+i; the same seed always gives identical files. Processing is tiled, so "
            "memory stays bounded for large sizes (tested up to 8192 px)."
        ),
    )
    p.add_argument("out_dir", type=Path, help="folder to write scenes into")
    p.add_argument("--size", type=_positive_int, default=512, help="pixels per side (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the first scene (default 0)")
    p.add_argument(
        "--relief", choices=RELIEFS, default="hills", help="terrain type (default hills)"
    )
    p.add_argument("--scenes", type=_positive_int, default=1, help="number of scenes (default 1)")
    p.add_argument("--pixel-size", type=float, default=10.0, help="metres per pixel (default 10)")
    p.add_argument(
        "--crs", default="EPSG:32633", help="projected CRS (default EPSG:32633, UTM 33N)"
    )
    p.add_argument("--sun-azimuth", type=float, default=150.0, help="degrees from north (150)")
    p.add_argument("--sun-elevation", type=float, default=40.0, help="degrees above horizon (40)")
    p.add_argument("--clouds", type=float, default=0.0, help="cloud cover fraction 0..1 (0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing scene folders")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from demgen.data.synth import SceneConfig, generate_world

    for i in range(args.scenes):
        existing = args.out_dir / f"scene_{i:03d}"
        if existing.exists() and not args.overwrite:
            raise DemgenError(f"{existing} already exists (pass --overwrite to replace it)")
    cfg = SceneConfig(
        size=args.size,
        seed=args.seed,
        relief=args.relief,
        pixel_size=args.pixel_size,
        crs=args.crs,
        sun_azimuth=args.sun_azimuth,
        sun_elevation=args.sun_elevation,
        cloud_cover=args.clouds,
    )
    t0 = time.time()
    paths = generate_world(args.out_dir, args.scenes, cfg, progress=not args.quiet)
    print(f"wrote {len(paths)} scene(s) to {args.out_dir} in {time.time() - t0:.1f} s")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: synthesize, train, predict a held-out scene, evaluate",
        description=(
            "Synthesize a small world (training, validation and a held-out test scene from "
            "another seed), train a U-Net DEM regressor within a time budget (about 10 "
            "minutes on 2 CPU cores; --fast: under 2), predict the whole held-out scene as a "
            "georeferenced GeoTIFF in metres, and compare it with two baselines (training-mean "
            "elevation and per-pixel linear regression on the bands). Writes prediction.tif, "
            "model.ckpt, metrics.json, report.md, figure.png and test_scene/ to the run folder."
        ),
    )
    p.add_argument("--fast", action="store_true", help="small world and short training (tests)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder (default runs/demo-<time>); must not exist",
    )
    p.add_argument(
        "--minutes", type=float, default=None, help="training time budget in minutes (default 7)"
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "32"),
        default="auto",
        help="auto: bf16 autocast + channels_last where supported (default)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from demgen.demo import DemoConfig, run_demo

    out = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise DemgenError(f"{out} already exists and is not empty (choose another --out)")
    cfg = DemoConfig.fast() if args.fast else DemoConfig()
    cfg = replace(cfg, precision=args.precision)
    if args.minutes is not None:
        if args.minutes <= 0:
            raise DemgenError(f"--minutes must be positive, got {args.minutes}")
        cfg = replace(cfg, budget_minutes=args.minutes)
    metrics = run_demo(out, cfg, progress=not args.quiet)
    m, lin, mean = metrics["model"], metrics["linear_baseline"], metrics["mean_baseline"]
    print(
        f"held-out MAE: model {m['mae_m']:.1f} m | linear baseline {lin['mae_m']:.1f} m | "
        f"mean baseline {mean['mae_m']:.1f} m"
    )
    print(f"run folder: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``demgen`` parser with all subcommands."""
    parser = _Parser(
        prog="demgen",
        description=(
            "Satellite imagery to Digital Elevation Models: synthetic worlds, training, "
            "georeferenced prediction and evaluation in metres."
        ),
    )
    parser.add_argument("--version", action="version", version=f"demgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_synth(sub)
    _add_demo(sub)
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


if __name__ == "__main__":
    sys.exit(main())
