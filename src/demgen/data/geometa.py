"""Geodetic facts a chip store records: ground area, pixel size and vertical datum.

Every number comes from :mod:`demgen.io.geodesy`, the one pixel-size-in-metres helper the
viewer and inference use too, so a store, its area and the model trained on it agree on
what a pixel is on the ground.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demgen.errors import InputError
from demgen.io.geodesy import UNKNOWN_DATUM, pixel_size_m, vertical_crs_of
from demgen.io.grid import Grid
from demgen.io.raster import open_raster


def chip_area_km2(grid: Grid, cells: int, cell_px: int) -> float:
    """Ground area of ``cells`` cells of ``cell_px`` x ``cell_px`` pixels of ``grid``.

    The pixel size in metres comes from :func:`demgen.io.geodesy.pixel_size_m` (WGS84
    degree lengths at the grid's centre for geographic grids, the CRS's linear unit for
    projected ones), the same helper the viewer and inference use.
    """
    x, y = pixel_size_m(grid.crs, grid.transform, grid.width, grid.height)
    return cells * cell_px * cell_px * x * y / 1e6


def dems_vertical_crs(dems: Sequence[str | Path]) -> str:
    """The one vertical datum the DEMs declare (:func:`demgen.io.geodesy.vertical_crs_of`).

    "unknown" unless every DEM declares the same datum; DEMs declaring different datums
    are refused: a mosaic of EGM96 and ellipsoidal heights is off by the geoid undulation
    (up to about 100 m) where they meet.
    """
    found = {}
    for d in dems:
        with open_raster(d) as ds:
            found[str(d)] = vertical_crs_of(ds)
    declared = {v for v in found.values() if v != UNKNOWN_DATUM}
    if len(declared) > 1:
        a, b = sorted(declared)[:2]
        fa = next(k for k, v in found.items() if v == a)
        fb = next(k for k, v in found.items() if v == b)
        raise InputError(f"{fb}: vertical datum {b!r} differs from {fa}'s {a!r}")
    if len(declared) == 1 and UNKNOWN_DATUM not in found.values():
        return declared.pop()
    return UNKNOWN_DATUM


def manifest_geodesy_line(manifest: dict[str, Any]) -> str | None:
    """One summary line with the store's pixel size in metres and vertical datum."""
    if "vertical_crs" not in manifest and "pixel_size_m" not in manifest:
        return None
    px = manifest.get("pixel_size_m")
    size = f"{px[0]:.2f} x {px[1]:.2f} m" if px else "not georeferenced"
    return f"pixel size: {size}; vertical datum: {manifest.get('vertical_crs', UNKNOWN_DATUM)}"
