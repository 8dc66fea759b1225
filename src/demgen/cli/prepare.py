"""`demgen prepare`: align imagery and DEMs (or import .npz chips) into a chip store."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from demgen.cli.common import positive_int


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST numbers, got {text!r}") from None
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative numbers, got {text!r}")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def _split(text: str) -> tuple[float, float, float] | str:
    """``--split``: TRAIN,VAL,TEST fractions, or a published split's name (``split_1``) of
    the ``--splits`` file given with ``--tiles``."""
    if text.strip().lower().startswith("split_"):
        return text.strip()
    return _fractions(text)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {v}")
    return v


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _extra(text: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` or ``PATH`` (named by the file's stem)."""
    name, sep, path = text.partition("=")
    if sep and name and "/" not in name and path:
        return name.strip(), Path(path)
    return None, Path(text)


DESCRIPTION = """\
Align imagery and elevation onto one grid and cut them into a chip store for training.

Inputs
  --image: one multi-band raster, one file per band (Landsat-style NAME_B1.TIF ...
  NAME_B7.TIF: single-band files sharing a stem form one scene, bands named by the
  suffix), or several scenes. GeoTIFF, COG or VRT, any CRS, resolution and dtype.
  --bands picks bands by description/suffix (B4,B3,B2) or 1-based index (4,3,2); they are
  recorded by name. --dem: one or more DEM/DSM/DTM rasters in any CRS (mosaicked: the
  first valid one wins). --extra NAME=PATH ...: refinement layers (initial DSM, second
  ortho, triangulation error), warped onto the same grid like the DEM and stored as
  extra.npy, their nodata masked like any input; NAME defaults to the file's stem. Layers
  named dsm, dtm, dem, initial_dsm, initial_dem, initial_dtm or height, or listed in
  --extra-heights, are heights: converted by --z-unit like the DEM and stored in metres;
  the others keep the source's values. The manifest records each layer's name, kind
  (height or value) and unit. --cloud-mask: rasters whose non-zero pixels are clouds.
  --npz imports earlier chip arrays without georeferencing (image (N,H,W,C) or (N,C,H,W)
  and DEM (N,H,W); keys detected, or --npz-keys rgb,dem); their heights are recorded as
  "relative" (unitless).

Alignment and masks
  Everything is warped with rasterio onto the DEM's grid (--grid dem, default), the
  image's (--grid image) or a new one (--crs and/or --resolution), cropped to the ground
  both cover. Elevation, imagery and extra layers are averaged when the target pixel is
  1.5x the source's or more (a 1 m lidar DEM onto a 10 m grid: each cell is the mean of its
  100 heights, not one point sample), else bilinear (--image-resampling overrides imagery);
  cloud masks take the maximum (any cloudy fine pixel makes the cell cloudy), else the
  nearest pixel. An averaged cell is invalid when any fine pixel in it is (nodata, NaN,
  outside the source): mosaic DEM tiles into one VRT first to avoid seams. Sizes compare in
  metres on the ground (WGS84 degree lengths for geographic rasters). Reading is windowed
  (one chip row at a time), so memory stays bounded (a 10980 x 10980 Sentinel-2 tile fits in
  well under 2 GB). A pixel is valid unless it is nodata in any input, NaN/inf, outside a
  source (scene edges) or cloudy; chips with more than --max-invalid invalid pixels are
  dropped, the rest keep their mask (invalid heights are NaN, never 0 m).

Normalization (fitted on the training split only, stored in the manifest)
  --normalize (elevation): global (to [-1, 1] by min/max, Sat2DEM), global-shift (chip
  minimum to -1, relative heights, offset kept per chip), zscore, residual ((h - chip
  mean) / GSF, GSF = mean per-chip standard deviation, DeepDEM). --image-normalize:
  percentile (per-band 2-98 % stretch), scale (fixed reflectance scale, --image-scale,
  default from the dtype) or band-zscore. Heights are stored in metres and normalized at
  read time, so every checkpoint can return metres. --z-unit ft converts feet (x 0.3048);
  a DEM whose metadata says feet is refused unless --z-unit is given.

Store and splits
  STORE/manifest.json (bands, units, CRS, pixel size in metres, the DEM's vertical datum
  (from a compound CRS such as EPSG:32633+5773 or a vertical_crs tag, else "unknown"),
  resampling used, per-chip provenance: scene, window, transform, valid fraction, height
  statistics; normalization; splits; extra layers; strict JSON), image.npy
  (N,C,H,W), elevation.npy (N,H,W float32 metres), mask.npy (N,H,W bool) and extra.npy
  (N,E,H,W float32), read memory-mapped. Splits are spatially blocked: blocks of --block
  x --block chips (shrunk until there are at least 6 blocks) go whole to train/val/test
  (--split, default 70,15,15, deterministic by --seed), and val/test chips closer than
  --buffer chip widths to a training chip are excluded. --folds K also stores K blocked
  folds. The store is built in a temporary folder and renamed at the end; an existing
  STORE is refused unless --overwrite.

Example
  demgen prepare --image LT5_B1.TIF ... LT5_B7.TIF --dem srtm.tif --bands B3,B2,B1 \\
      --chip-size 64 -o landsat_chips
  demgen info landsat_chips
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="align imagery and DEMs (or import .npz chips) into a chip store with splits",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("inputs")
    src.add_argument("--image", nargs="+", type=Path, metavar="PATH", help="image raster(s)")
    src.add_argument("--dem", nargs="+", type=Path, metavar="PATH", help="elevation raster(s)")
    src.add_argument("--npz", nargs="+", type=Path, metavar="FILE", help=".npz chip arrays")
    src.add_argument(
        "--tiles",
        nargs=2,
        type=Path,
        metavar=("SAT_DIR", "DEM_DIR"),
        help="Sat2DEM-style georeferenced tiles: a folder of image GeoTIFFs and one of DEM "
        "GeoTIFFs paired by their _<n>.tif index (instead of --image/--dem)",
    )
    src.add_argument(
        "--series",
        nargs="+",
        type=Path,
        metavar="PLACE",
        help="time-series folders (times.json, tNN/image.tif, buildings.tif, clouds.tif: "
        "demgen synth --times, the SpaceNet 7 or Sentinel-2 series importers) into a time "
        "store of dated chips for temporal synthesis (uses --chip-size, --split, --block, "
        "--buffer, --seed, --max-invalid)",
    )
    src.add_argument("--npz-keys", type=_csv, metavar="IMG,DEM", help="array names in --npz")
    src.add_argument("--bands", type=_csv, metavar="B4,B3,B2", help="bands by name or index")
    src.add_argument(
        "--extra",
        nargs="+",
        type=_extra,
        default=[],
        metavar="[NAME=]PATH",
        help="extra layers for refinement (initial_dsm=dsm.tif ortho2=b.tif err=e.tif)",
    )
    src.add_argument(
        "--extra-heights",
        type=_csv,
        default=[],
        metavar="NAME,...",
        help="more --extra names holding heights (dsm, initial_dsm ... always do)",
    )
    src.add_argument(
        "--extra-gaps",
        type=_csv,
        default=[],
        metavar="NAME,...",
        help="--extra layers whose nodata are gaps (kept as NaN) rather than invalid pixels",
    )
    src.add_argument(
        "--cloud-mask",
        nargs="+",
        type=Path,
        default=[],
        metavar="PATH",
        help="cloud mask raster(s): non-zero = cloud",
    )
    src.add_argument(
        "--z-unit",
        choices=("m", "ft"),
        default=None,
        help="unit of DEM heights (default m; ft is converted to metres)",
    )
    p.add_argument("-o", "--out", type=Path, required=True, metavar="STORE", help="store folder")
    g = p.add_argument_group("grid and chips")
    g.add_argument("--grid", choices=("dem", "image"), default="dem", help="target grid (dem)")
    g.add_argument("--crs", help="target CRS instead (e.g. EPSG:32633)")
    g.add_argument("--resolution", type=float, help="target pixel size in CRS units")
    g.add_argument(
        "--image-resampling",
        default="auto",
        choices=("auto", "average", "bilinear", "nearest", "cubic"),
        help="imagery resampling (auto: average when shrinking 1.5x or more, else bilinear)",
    )
    g.add_argument("--chip-size", type=positive_int, default=256, help="pixels (256)")
    g.add_argument("--stride", type=positive_int, help="pixels between chips (chip size)")
    g.add_argument(
        "--max-invalid",
        type=_fraction,
        default=0.2,
        help="drop chips with more invalid pixels than this fraction (0.2)",
    )
    n = p.add_argument_group("normalization")
    n.add_argument(
        "--normalize",
        default="global",
        choices=("global", "global-shift", "zscore", "residual"),
        help="elevation strategy (global)",
    )
    n.add_argument(
        "--image-normalize",
        default="percentile",
        choices=("percentile", "scale", "band-zscore"),
        help="imagery (percentile)",
    )
    n.add_argument("--image-scale", type=float, help="reflectance scale (default from dtype)")
    s = p.add_argument_group("splits")
    s.add_argument(
        "--split",
        type=_split,
        default=(0.7, 0.15, 0.15),
        metavar="T,V,T|split_N",
        help="train,val,test fractions (70,15,15) of demgen's blocked split; with --tiles and "
        "--splits, the name of a published split (split_1 ... split_4) instead",
    )
    s.add_argument(
        "--splits",
        type=Path,
        metavar="FILE",
        help="with --tiles: dataset_splits.json (split_1..split_4, each train/validation/test "
        "tile indices); --split names the one to use (split_1 by default). The published "
        "split is random by tile and recorded as such",
    )
    s.add_argument("--block", type=positive_int, default=4, help="chips per block side (4)")
    s.add_argument("--buffer", type=float, default=1.0, help="chip widths of buffer (1)")
    s.add_argument("--folds", type=int, default=0, help="also store K spatial folds (0: none)")
    s.add_argument("--seed", type=int, default=0, help="split and sampling seed (0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing STORE")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=run)


def _series(args: argparse.Namespace) -> int:
    """``--series``: time-series folders -> a time store (:mod:`demgen.data.timestore`)."""
    from demgen.data.timestore import TimeStore, build_time_store
    from demgen.errors import InputError

    if args.image or args.dem or args.npz or args.tiles or args.extra:
        raise InputError("give --series alone (not with --image, --dem, --npz, --tiles, --extra)")
    if isinstance(args.split, str):
        raise InputError("--series takes --split as three fractions, e.g. 0.7,0.15,0.15")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise InputError(f"{args.out} exists and is not empty (pass --overwrite to replace it)")
    t0 = time.time()
    out = build_time_store(args.series, args.out, chip_size=args.chip_size,
                           fractions=tuple(args.split), block=args.block, buffer=args.buffer,
                           seed=args.seed, max_invalid=args.max_invalid)  # fmt: skip
    m = TimeStore(out).manifest
    splits = ", ".join(f"{k} {len(v)}" for k, v in m["splits"].items())
    print(f"{len(m['places'])} places, {len(m['locations'])} locations ({splits}), "
          f"{len(m['frames']['t'])} dated chips, {len(m['pairs'])} pairs")  # fmt: skip
    print(f"wrote {out} in {time.time() - t0:.1f} s")
    return 0


def run(args: argparse.Namespace) -> int:
    from demgen.data.chips import ChipStore, summary
    from demgen.data.prepare import (
        PrepareConfig,
        manifest_geodesy_line,
        prepare_npz,
        prepare_rasters,
    )
    from demgen.errors import InputError

    published = args.split if isinstance(args.split, str) else None
    if published and not args.splits:
        raise InputError(f"--split {published} names a published split: give --splits FILE")
    if args.series:
        return _series(args)
    if args.splits and not args.tiles:
        raise InputError("--splits goes with --tiles SAT_DIR DEM_DIR")
    if args.tiles and (args.npz or args.image or args.dem or args.extra):
        raise InputError("give --tiles alone (not with --image, --dem, --npz or --extra)")
    if args.npz and (args.image or args.dem):
        raise InputError("give either --npz or --image with --dem, not both")
    if args.npz and args.extra:
        raise InputError("--extra needs --image and --dem (not --npz)")
    if not args.npz and not args.tiles and not (args.image and args.dem):
        raise InputError("prepare needs --image and --dem (or --npz, --tiles or --series)")
    cfg = PrepareConfig(
        chip_size=args.chip_size,
        stride=args.stride,
        grid=args.grid,
        crs=args.crs,
        resolution=args.resolution,
        bands=args.bands,
        normalize=args.normalize,
        image_normalize=args.image_normalize,
        image_scale=args.image_scale,
        image_resampling=args.image_resampling,
        z_unit=args.z_unit,
        max_invalid=args.max_invalid,
        fractions=(0.7, 0.15, 0.15) if published else args.split,
        block=args.block,
        buffer=args.buffer,
        folds=args.folds,
        seed=args.seed,
        extra_names=[name or path.stem for name, path in args.extra],
        extra_heights=args.extra_heights,
        extra_gaps=args.extra_gaps,
    )
    t0 = time.time()
    if args.tiles:
        from demgen.data.tiles import import_tiles

        name = published or ("split_1" if args.splits else None)
        out = import_tiles(args.tiles[0], args.tiles[1], args.out, cfg, args.splits, name,
                           overwrite=args.overwrite, log=None if args.quiet else print)  # fmt: skip
    elif args.npz:
        out = prepare_npz(args.npz, args.out, cfg, keys=args.npz_keys, overwrite=args.overwrite)
    else:
        log = None if args.quiet else print
        out = prepare_rasters(
            args.image,
            args.dem,
            args.out,
            cfg,
            cloud_masks=args.cloud_mask,
            extras=[path for _, path in args.extra],
            overwrite=args.overwrite,
            log=log,
        )
    store = ChipStore(out)
    text = summary(store)
    line = manifest_geodesy_line(store.manifest)
    print(text if line is None or line in text else f"{text}\n{line}")
    print(f"wrote {out} in {time.time() - t0:.1f} s")
    return 0
