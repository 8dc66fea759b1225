"""Rasters read onto a reference grid, window by window, for :mod:`demgen.evaluate`.

The reference fixes the grid (CRS, transform, size) and its pixel size in metres
(:func:`demgen.io.geodesy.pixel_size_m`; per row on a geographic grid, where the east-west
size shrinks with cos(latitude)). Another raster comes onto it:

- unchanged, when it is on the same grid and not shifted;
- through a GDAL warped VRT otherwise, read one window at a time: ``average`` when the
  source pixels are 1.5x finer or more than the reference's (every source pixel counts,
  as in a box filter: no aliasing of fine detail), bilinear otherwise, and nearest for
  masks and class rasters. Bilinear is pinned to a constant kernel scale (GDAL's
  ``XSCALE``/``YSCALE`` = 1) so that a window gives the same values as the whole grid;
- shifted by a sub-pixel offset (co-registration): the VRT's grid is the reference grid
  moved by that offset, so the shift costs no second resampling.

Nodata becomes NaN; values come back as float64. :meth:`OnGrid.read` reads band 1 (DEMs);
:meth:`OnGrid.read_bands` several bands at once (images: :mod:`demgen.evaluation_image`),
where GDAL's mask (nodata, an internal mask or an alpha band) and ``implicit_nodata`` also
become NaN. :func:`check_out_dir` and :func:`fmt_value` serve both evaluations' reports.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.coords import disjoint_bounds
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling, transform_bounds
from rasterio.windows import Window

from demgen.errors import InputError
from demgen.io.geodesy import pixel_size_m, pixel_size_m_of, vertical_crs_of
from demgen.io.raster import open_raster, require_crs
from demgen.io.resampling import AVERAGE_FROM_SHRINK, shrink_factor

GDAL_CACHE_BYTES = 128 * 2**20  # GDAL's block cache while evaluating (two strips of tiles)


@dataclass(frozen=True)
class RefGrid:
    """The reference's grid and its pixel size in metres (at the grid's centre)."""

    path: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    bounds: tuple[float, float, float, float]
    pixel_size_m: tuple[float, float]

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def window_pixel_size(self, row0: int, col0: int, nrows: int, ncols: int):
        """Pixel size (x, y) in metres at the centre of a sub-grid."""
        tr = self.transform * Affine.translation(col0, row0)
        return pixel_size_m(self.crs, tr, ncols, nrows)

    def row_pixel_sizes(self, row0: int, nrows: int):
        """Pixel size (x, y) in metres of rows ``row0 .. row0 + nrows``: two floats on a
        projected grid, two (nrows, 1) arrays (each row's own size) on a geographic one."""
        if not self.crs.is_geographic:
            return self.pixel_size_m
        sizes = np.array([self.window_pixel_size(r, 0, 1, self.width) for r in
                          range(row0, row0 + nrows)])  # fmt: skip
        return sizes[:, :1], sizes[:, 1:]


def reference_grid(path: str | Path) -> RefGrid:
    """The grid of the reference raster at ``path``."""
    with open_raster(path) as ds:
        require_crs(ds, path)
        return RefGrid(
            str(path), ds.crs, ds.transform, ds.width, ds.height, tuple(ds.bounds),
            pixel_size_m_of(ds),
        )  # fmt: skip


class OnGrid:
    """Band 1 of a raster on a reference grid, read by windows (a context manager)."""

    def __init__(
        self,
        path: str | Path,
        grid: RefGrid,
        *,
        categorical: bool = False,
        shift: tuple[float, float] = (0.0, 0.0),
        dz: float = 0.0,
        implicit_nodata: float | None = None,
    ):
        """``shift`` = (columns, rows) of the reference grid: pixel (r, c) reads the raster
        at (r + rows, c + cols); ``dz`` is subtracted from every value. ``implicit_nodata``:
        for a file that declares no nodata, a value meaning "no data" where *every* band
        holds it (Sentinel-2's 0 in uint16; GDAL's ``UNIFIED_SRC_NODATA`` when warped)."""
        self.path, self.grid, self.dz = Path(path), grid, float(dz)
        self.implicit_nodata = None
        self._stack = contextlib.ExitStack()
        try:
            ds = self._stack.enter_context(open_raster(path))
            if ds.nodata is None and implicit_nodata is not None:
                self.implicit_nodata = float(implicit_nodata)
            self._open(ds, categorical, shift)
        except BaseException:
            self._stack.close()
            raise

    def _open(self, ds: Any, categorical: bool, shift: tuple[float, float]) -> None:
        grid = self.grid
        require_crs(ds, self.path)
        if disjoint_bounds(transform_bounds(ds.crs, grid.crs, *ds.bounds), grid.bounds):
            raise InputError(f"{self.path}: does not overlap the reference {grid.path}")
        self.vertical_crs = vertical_crs_of(ds)
        self.tags = ds.tags()
        self.nodata = ds.nodata
        same = (
            ds.crs == grid.crs
            and ds.transform.almost_equals(grid.transform)
            and ds.shape == grid.shape
            and shift == (0.0, 0.0)
        )
        if same:
            self.ds, self.resampling = ds, "none"
            return
        extra: dict[str, Any] = {}
        if categorical:
            method = Resampling.nearest
        elif shrink_factor(ds, grid) >= AVERAGE_FROM_SHRINK:  # demgen.io.resampling
            method = Resampling.average
        else:
            method, extra = Resampling.bilinear, {"XSCALE": 1, "YSCALE": 1}
        src_nodata = ds.nodata
        if src_nodata is None and self.implicit_nodata is not None:
            src_nodata, extra = self.implicit_nodata, extra | {"UNIFIED_SRC_NODATA": "YES"}
        elif src_nodata is None and np.dtype(ds.dtypes[0]).kind == "f":
            src_nodata = np.nan
        self.ds = self._stack.enter_context(
            WarpedVRT(
                ds, crs=grid.crs, transform=grid.transform * Affine.translation(*shift),
                width=grid.width, height=grid.height, resampling=method,
                src_nodata=src_nodata, nodata=np.nan, dtype="float64", **extra,
            )
        )  # fmt: skip
        self.resampling = method.name

    def read(self, row0: int, nrows: int, col0: int = 0, ncols: int | None = None) -> np.ndarray:
        """Rows ``row0 .. row0 + nrows`` (and columns) on the grid; float64, nodata NaN."""
        ncols = self.grid.width - col0 if ncols is None else ncols
        a = self.ds.read(1, window=Window(col0, row0, ncols, nrows)).astype(np.float64)
        if self.resampling == "none" and self.nodata is not None:
            a[a == self.nodata] = np.nan
        if self.dz:
            a -= self.dz
        return a

    def read_all(self) -> np.ndarray:
        return self.read(0, self.grid.height)

    def read_bands(
        self, bands: list[int], row0: int = 0, nrows: int | None = None, *, masked: bool = True
    ) -> np.ndarray:
        """Bands (1-based) of rows ``row0 .. row0 + nrows`` (default: to the end) on the grid,
        (bands, rows, width) float64, NaN where GDAL's mask or ``implicit_nodata`` says so
        (``masked=False``: the values as stored, for a caller that knows the valid pixels;
        a warped file's nodata is NaN either way)."""
        nrows = self.grid.height - row0 if nrows is None else nrows
        win = Window(0, row0, self.grid.width, nrows)
        a = self.ds.read(bands, window=win).astype(np.float64)
        if self.resampling == "none" and masked:
            a[self.ds.read_masks(bands, window=win) == 0] = np.nan
            if self.implicit_nodata is not None:
                a[:, (a == self.implicit_nodata).all(axis=0)] = np.nan
        return a

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> OnGrid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """``out_dir``, refused when it is a file, or a non-empty folder without ``overwrite``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file, not a folder for the report")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(
            f"{out_dir} already exists and is not empty (pass --overwrite to replace it)"
        )
    return out_dir


def fmt_value(value: Any, spec: str = ".3f") -> str:
    """A metric for a report: ``n/a`` for None and NaN, ``inf`` for infinity."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, float) and np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)
