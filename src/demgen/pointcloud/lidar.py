"""``demgen lidar``: LAS/LAZ/COPC tiles to ``dsm.tif``, ``dtm.tif`` and ``density.tif``.

The recipe follows DeepDEM's ground truth from USGS 3DEP lidar (noise dropped, first
returns to a DSM, ground returns to a DTM, tiles merged), with three differences, each
stated where it is implemented:

- noise: classes 7 and 18 and withheld points are dropped (``--drop-classes`` to change;
  DeepDEM also dropped water, class 9: pass ``--drop-classes 7,9,18`` for that), then the
  isolated-return filter of :mod:`demgen.pointcloud.outliers` catches unclassified noise;
- DSM: the highest first-or-only return per cell (no interpolation: a cell without a first
  return is nodata);
- DTM: the mean of the ground returns (class 2) per cell, cells without ground filled by
  the harmonic interpolant of :mod:`demgen.pointcloud.fill` up to ``--max-gap`` metres
  from the nearest ground cell (DeepDEM: inverse-distance weighting).

All tiles are gridded onto one grid (a mosaic). Points are read ``chunk_size`` at a time
and accumulated per cell (:mod:`demgen.pointcloud.grid`), so memory is the grid's, not the
cloud's. Heights are written in metres (feet are converted by the CRS's linear unit, or
``--z-unit``), float32, nodata -9999, with the vertical datum tagged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from tqdm.auto import tqdm

from demgen.errors import InputError
from demgen.io.geodesy import UNKNOWN_DATUM, VERTICAL_CRS_TAG, linear_unit_m, pixel_size_m
from demgen.io.jsonio import write_json
from demgen.io.raster import write_raster
from demgen.pointcloud import fill, outliers
from demgen.pointcloud.grid import NODATA, NOISE_CLASSES, Accumulator, GridSpec
from demgen.pointcloud.lasio import LAS_SUFFIXES, LasInfo, iter_chunks, read_info

DEFAULT_MAX_GAP_M = 50.0  # half the width of a large building footprint: 100 m gaps fill
Z_UNITS = {"m": 1.0, "ft": 0.3048, "us-ft": 1200.0 / 3937.0}
OUTPUTS = ("dsm.tif", "dtm.tif", "density.tif", "lidar.json")


@dataclass
class LidarConfig:
    """How to grid (every field is a ``demgen lidar`` flag)."""

    resolution: float
    crs: str | None = None  # for files whose header has no CRS
    bounds: tuple[float, float, float, float] | None = None  # west, south, east, north
    drop_classes: tuple[int, ...] = NOISE_CLASSES
    outlier_threshold: float | None = None  # metres; None: max(5 m, 2 x cell)
    max_gap: float = DEFAULT_MAX_GAP_M  # metres from the nearest ground cell
    z_unit: str = "auto"  # auto: the CRS's linear unit; or m, ft, us-ft
    chunk_size: int = 1_000_000
    overwrite: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders as their ``*.las``/``*.laz`` files (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in LAS_SUFFIXES)
            if not found:
                raise InputError(f"{p}: folder holds no .las or .laz files")
            out += found
        else:
            out.append(p)
    if not out:
        raise InputError("no point cloud files given")
    return out


def _resolve_crs(infos: Sequence[LasInfo], user: str | None) -> CRS:
    given = None
    if user:
        try:
            given = CRS.from_user_input(user)
        except Exception as exc:
            raise InputError(f"--crs {user!r} is not a CRS rasterio understands") from exc
    crs: CRS | None = None
    for info in infos:
        c = info.crs
        if c is None:
            if given is None:
                raise InputError(
                    f"{info.path}: the header has no CRS; pass --crs (e.g. --crs EPSG:32633)"
                )
            c = given
        elif given is not None and c != given:
            raise InputError(
                f"{info.path}: the header's CRS ({c.to_string()}) differs from --crs "
                f"{user} (demgen lidar does not reproject points)"
            )
        if crs is None:
            crs = c
        elif c != crs:
            raise InputError(
                f"{info.path}: CRS {c.to_string()} differs from {infos[0].path}'s "
                f"{crs.to_string()} (reproject the tiles to one CRS first)"
            )
    assert crs is not None
    return crs


def _vertical(infos: Sequence[LasInfo]) -> str:
    known = sorted({i.vertical for i in infos if i.vertical != UNKNOWN_DATUM})
    if len(known) > 1:
        raise InputError(f"the tiles declare different vertical datums: {', '.join(known)}")
    return known[0] if known else UNKNOWN_DATUM


def _z_factor(crs: CRS, z_unit: str) -> float:
    if z_unit == "auto":
        return 1.0 if crs.is_geographic else linear_unit_m(crs)
    if z_unit not in Z_UNITS:
        raise InputError(f"--z-unit {z_unit!r}: choose auto, {', '.join(Z_UNITS)}")
    return Z_UNITS[z_unit]


def grid_lidar(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: LidarConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Grid point cloud tiles into ``out_dir``/dsm.tif, dtm.tif, density.tif, lidar.json.

    Returns the summary written to lidar.json (inputs, grid, point counts, outliers,
    filled cells, seconds).
    """
    t0 = time.time()
    out = Path(out_dir)
    if not config.overwrite:
        clash = [n for n in OUTPUTS if (out / n).exists()]
        if clash:
            raise InputError(f"{out / clash[0]} already exists (pass --overwrite to replace it)")
    if not (math.isfinite(config.max_gap) and config.max_gap >= 0):
        raise InputError(f"--max-gap must be >= 0 metres, got {config.max_gap}")
    if config.chunk_size < 1:
        raise InputError("--chunk-size must be positive")
    files = expand_inputs(paths)
    infos = [read_info(f) for f in files]
    crs = _resolve_crs(infos, config.crs)
    vertical = _vertical(infos)
    relative = any(i.relative for i in infos)
    z_factor = _z_factor(crs, config.z_unit)
    with_points = [i for i in infos if i.count > 0]
    if config.bounds is not None:
        grid = GridSpec.from_bounds(config.bounds, config.resolution, crs, snap=False)
    elif with_points:
        b = np.array([i.bounds for i in with_points])
        extent = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
        grid = GridSpec.from_bounds(extent, config.resolution, crs, snap=True)
    else:
        raise InputError("the point cloud files hold no points (and no --bounds was given)")
    px, py = pixel_size_m(crs, grid.transform, grid.width, grid.height)
    cell_m = math.sqrt(px * py)
    threshold = (
        outliers.default_threshold(cell_m)
        if config.outlier_threshold is None
        else float(config.outlier_threshold)
    )
    if log:
        log(
            f"{len(files)} file(s), {sum(i.count for i in infos):,} points -> "
            f"{grid.width} x {grid.height} grid at {grid.resolution:g} ({crs.to_string()})"
        )

    acc = Accumulator(grid, tuple(config.drop_classes))
    bar = tqdm(
        total=sum(i.count for i in infos), desc="lidar", unit="pt", unit_scale=True,
        disable=not progress,
    )  # fmt: skip
    with bar:
        for info in infos:
            for chunk in iter_chunks(info.path, config.chunk_size):
                acc.add(chunk, z_factor)
                bar.update(len(chunk))

    t_grid = time.time()
    ground, dtm_stats = outliers.filter_dtm(
        acc.shaped("gsum"), acc.shaped("gcount"), acc.shaped("gmin"), acc.shaped("gmax"),
        threshold,
    )  # fmt: skip
    del acc.gsum, acc.gmin, acc.gmax, acc.gcount
    dsm, dsm_out = outliers.filter_dsm(acc.shaped("top1"), acc.shaped("top2"), threshold, ground)
    del acc.top1, acc.top2
    ground_cells = int(np.isfinite(ground).sum())
    density = acc.shaped("density").astype(np.float32)
    point_stats = dict(acc.stats)
    del acc
    known = np.isfinite(ground)
    gap_cells = math.ceil(config.max_gap / cell_m - 1e-9)
    reach = fill.within_reach(known, gap_cells)
    solve = fill.within_reach(known, fill.SOLVE_MARGIN * gap_cells)
    dtm = fill.harmonic_fill(np.nan_to_num(ground), known, solve & ~known)
    dtm[~reach] = NODATA
    del ground, known
    dsm_valid = np.isfinite(dsm)
    dsm = np.where(dsm_valid, dsm, NODATA).astype(np.float32)

    tags = {
        VERTICAL_CRS_TAG: "relative" if relative else vertical,
        "heights": "relative" if relative else "absolute",
        "source": "demgen lidar",
        **config.extra_tags,
    }
    common = {"crs": crs, "transform": grid.transform}
    write_raster(out / "dsm.tif", dsm, nodata=NODATA, descriptions=["dsm"], units=["metre"],
                 tags={**tags, "method": "highest first-or-only return per cell"},
                 **common)  # fmt: skip
    write_raster(out / "dtm.tif", dtm, nodata=NODATA, descriptions=["dtm"], units=["metre"],
                 tags={**tags, "method": "mean of ground returns, harmonic fill",
                       "max_gap_m": f"{config.max_gap:g}"}, **common)  # fmt: skip
    write_raster(out / "density.tif", density, descriptions=["points per cell"],
                 tags={"source": "demgen lidar"}, **common)  # fmt: skip

    summary = {
        "inputs": [str(i.path) for i in infos],
        "crs": crs.to_string(),
        "vertical_crs": tags[VERTICAL_CRS_TAG],
        "heights": tags["heights"],
        "z_factor": z_factor,
        "grid": {
            "width": grid.width,
            "height": grid.height,
            "resolution": grid.resolution,
            "bounds": list(grid.bounds),
        },  # fmt: skip
        "points": point_stats,
        "drop_classes": list(config.drop_classes),
        "outlier_threshold_m": threshold,
        "dsm": {
            "cells": int(dsm_valid.sum()),
            "outliers": int(dsm_out.sum()),
            "outliers_to_nodata": int((dsm_out & ~dsm_valid).sum()),
        },  # fmt: skip
        "dtm": {
            "ground_cells": ground_cells,
            "filled_cells": int(reach.sum()) - ground_cells,
            "nodata_cells": int((~reach).sum()),
            "max_gap_m": config.max_gap,
            **dtm_stats,
        },  # fmt: skip
        "seconds": {"gridding": round(t_grid - t0, 2), "total": round(time.time() - t0, 2)},
    }
    write_json(out / "lidar.json", summary)
    return summary
