"""`demgen lidar`: LAS/LAZ/COPC point clouds to DSM, DTM and density rasters."""

from __future__ import annotations

import argparse
from pathlib import Path

from demgen.cli.common import positive_int
from demgen.errors import InputError


def _bounds(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"expected W,S,E,N (four numbers), got {text!r}")
    return vals  # type: ignore[return-value]


def _classes(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip()) if text.strip() else ()
    except ValueError:
        vals = (-1,)
    if any(not 0 <= v <= 255 for v in vals):
        raise argparse.ArgumentTypeError(f"expected class numbers 0-255 like 7,18, got {text!r}")
    return vals


def add_parser(sub: argparse._SubParsersAction) -> None:
    from demgen.pointcloud.lidar import DEFAULT_MAX_GAP_M, Z_UNITS

    p = sub.add_parser(
        "lidar",
        help="grid lidar (LAS/LAZ/COPC) into dsm.tif, dtm.tif and density.tif",
        description=(
            "Grid one or more LAS/LAZ/COPC tiles (or folders of them) as one mosaic into "
            "OUT_DIR: dsm.tif (highest first-or-only return per cell), dtm.tif (mean of the "
            "ground returns, class 2, gaps filled by harmonic interpolation up to --max-gap "
            "metres from ground), density.tif (kept points per cell) and lidar.json (counts). "
            "Noise classes and withheld points are dropped; an isolated-return filter removes "
            "lone noise returns but keeps summits (a cell's highest return is an outlier only "
            "when it is more than --outlier-threshold above its own second return and the "
            "highest return of each of its 8 neighbours, or that far below the lowest ground "
            "around it). Heights are "
            "float32 metres, nodata -9999, vertical datum tagged. Points are read in chunks, "
            "so memory is bounded by the grid, not the cloud."
        ),
    )
    p.add_argument("points", nargs="+", type=Path, help="LAS/LAZ/COPC files or folders")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--resolution", type=float, required=True, help="cell size in CRS units (e.g. 1 for 1 m)"
    )
    p.add_argument("--crs", help="CRS of files whose header has none (e.g. EPSG:32633)")
    p.add_argument(
        "--bounds", type=_bounds, metavar="W,S,E,N",
        help="grid exactly these bounds (CRS units); default: the data's extent, snapped "
        "outward to multiples of --resolution",
    )  # fmt: skip
    p.add_argument(
        "--drop-classes", type=_classes, default=(7, 18), metavar="C,...",
        help="classes to drop (default 7,18: low and high noise; DeepDEM also dropped 9, water)",
    )  # fmt: skip
    p.add_argument(
        "--outlier-threshold", type=float, metavar="M",
        help="metres a return must differ from all its support to be an outlier "
        "(default max(5, 2 x cell size))",
    )  # fmt: skip
    p.add_argument(
        "--max-gap", type=float, default=DEFAULT_MAX_GAP_M, metavar="M",
        help="DTM cells farther than this from ground stay nodata "
        f"(default {DEFAULT_MAX_GAP_M:g} m)",
    )  # fmt: skip
    p.add_argument(
        "--z-unit", choices=("auto", *Z_UNITS), default="auto",
        help="unit of the heights (default auto: the CRS's linear unit); written in metres",
    )  # fmt: skip
    p.add_argument(
        "--chunk-size", type=positive_int, default=1_000_000, help="points read at a time (1e6)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demgen.pointcloud.lidar import LidarConfig, grid_lidar

    if args.max_gap is not None and args.max_gap < 0:
        raise InputError("--max-gap must be >= 0 metres")
    cfg = LidarConfig(
        resolution=args.resolution,
        crs=args.crs,
        bounds=args.bounds,
        drop_classes=args.drop_classes,
        outlier_threshold=args.outlier_threshold,
        max_gap=args.max_gap,
        z_unit=args.z_unit,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
    )
    s = grid_lidar(args.points, args.out, cfg, progress=not args.quiet, log=print)
    pts, g = s["points"], s["grid"]
    print(
        f"wrote {args.out}/dsm.tif, dtm.tif, density.tif ({g['width']} x {g['height']}): "
        f"{pts['kept']:,} of {pts['read']:,} points kept ({pts['noise']:,} noise, "
        f"{pts['withheld']:,} withheld, {pts['outside']:,} outside), "
        f"{s['dsm']['outliers']:,} DSM outlier cells, {s['dtm']['filled_cells']:,} DTM cells "
        f"filled, vertical datum {s['vertical_crs']}, {s['seconds']['total']:.1f} s"
    )
    return 0
