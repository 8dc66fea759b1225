"""`demgen synth`: write synthetic scenes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from demgen.cli.common import positive_int
from demgen.errors import DemgenError


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--size", type=positive_int, default=512, help="pixels per side (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the first scene (default 0)")
    p.add_argument(
        "--relief", choices=RELIEFS, default="hills", help="terrain type (default hills)"
    )
    p.add_argument("--scenes", type=positive_int, default=1, help="number of scenes (default 1)")
    p.add_argument("--pixel-size", type=float, default=10.0, help="metres per pixel (default 10)")
    p.add_argument(
        "--crs", default="EPSG:32633", help="projected CRS (default EPSG:32633, UTM 33N)"
    )
    p.add_argument("--sun-azimuth", type=float, default=150.0, help="degrees from north (150)")
    p.add_argument("--sun-elevation", type=float, default=40.0, help="degrees above horizon (40)")
    p.add_argument(
        "--clouds",
        type=float,
        default=None,
        help="cloud cover fraction 0..1 (0); with --times the mean cover per date (0.2)",
    )
    p.add_argument(
        "--times",
        type=positive_int,
        default=None,
        help="write a time series of K dates per scene instead (t00/ ... with image.tif, "
        "buildings.tif, clouds.tif, dsm.tif, landcover.tif; times.json): urban growth, "
        "phenology, snow, clouds and haze per date",
    )
    p.add_argument(
        "--months-between",
        type=positive_int,
        default=1,
        help="calendar months between dates of --times (default 1, monthly like SpaceNet 7)",
    )
    p.add_argument(
        "--stereo",
        action="store_true",
        help="also write refinement inputs: initial_dsm.tif (stereo-like errors, -9999 holes), "
        "ortho2.tif (second sun and view), triangulation_error.tif, ndvi.tif",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing scene folders")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
        cloud_cover=0.0 if args.clouds is None else args.clouds,
        stereo=args.stereo,
    )
    t0 = time.time()
    if args.times is not None:
        from demgen.data.synth.timeseries import TimeSeriesConfig, generate_time_series_world

        ts = TimeSeriesConfig(times=args.times, months_between=args.months_between)
        if args.clouds is not None:
            ts.cloud_cover = args.clouds
        paths = generate_time_series_world(
            args.out_dir, args.scenes, cfg, ts, progress=not args.quiet
        )
        print(f"wrote {len(paths)} time series of {args.times} dates to {args.out_dir} "
              f"in {time.time() - t0:.1f} s")  # fmt: skip
        return 0
    paths = generate_world(args.out_dir, args.scenes, cfg, progress=not args.quiet)
    print(f"wrote {len(paths)} scene(s) to {args.out_dir} in {time.time() - t0:.1f} s")
    return 0
