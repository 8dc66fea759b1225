"""One input raster on the target grid: the resampling rule and each pixel's validity.

Resampling rule (:func:`resampling_for`), by the shrink factor ``s`` = destination pixel
size / source pixel size, both in metres (:func:`demgen.io.geodesy.pixel_size_m`, so a
1 arc-second DEM and a 10 m UTM grid compare on the ground):

- continuous layers (heights, imagery, extra layers): ``average`` when ``s >= 1.5``, else
  ``bilinear``. When downsampling, GDAL's bilinear widens its tent kernel to two
  destination cells, so each cell is blurred with its neighbours: a 10 x 10 m building
  10 m tall in a 1 m DSM comes out 5.6 m tall on a 10 m grid, with 0.9 m spilt onto each
  neighbour (measured, GDAL 3.10); pure point sampling (nearest) aliases a +-5 m
  checkerboard of 3 m squares into +-5 m errors. The average gives each cell the mean of
  the heights inside it (10 m and 0 m beside), which is what a 10 m DEM means. Below 1.5x
  a cell spans one or two source pixels per axis and an area average is close to a box
  of one source pixel (at ``s < 1``, a nearest-neighbour step), while bilinear
  interpolates smoothly; same-resolution reprojections (``s`` near 1) keep bilinear. The
  same 1.5 threshold has been the imagery rule since the first release.
- masks (cloud masks, non-zero = cloud): ``max`` when ``s >= 1.5`` (a coarse cell is
  cloudy when any of its fine pixels is), else ``nearest``.

Validity when averaging: a coarse cell is valid only when every fine pixel in its
footprint is valid. Its stored value is then the mean of the whole footprint, never of a
part (the mean of the valid half of a cell on a 30 degree slope is off by about a
quarter cell times the slope: 1.4 m at 10 m); the cost is that voids and scene edges grow
by less than one coarse cell. Fine nodata pixels count through GDAL's
``NODATA_VALUES_PCT_THRESHOLD=0`` warp option, NaN propagates through the mean by itself,
and cells reaching outside the source raster are masked from their corners. Separate DEM
tiles therefore leave a seam of invalid cells where a coarse cell straddles two tiles:
mosaic the tiles into one VRT first (``gdalbuildvrt``) when downsampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as transform_points
from rasterio.windows import Window

from demgen.errors import InputError
from demgen.io.geodesy import horizontal_crs
from demgen.io.resampling import (  # noqa: F401 (re-exported)
    AVERAGE_FROM_SHRINK,
    CONTINUOUS,
    MASK,
    resampling_for,
    shrink_factor,
)

CORNER_STEP = 16  # cells between projected corners in the inside-the-source test


def image_resampling(src_res: float, dst_res: float, method: str = "auto") -> Resampling:
    """``average`` when shrinking by 1.5x or more, else ``bilinear`` (or the named method)."""
    return resampling_for(CONTINUOUS, dst_res / src_res if src_res > 0 else 1.0, method)


class Layer:
    """One input file warped to the target grid (or read directly when already on it)."""

    def __init__(self, path: Path, ds: Any, grid: Any, resampling: Resampling) -> None:
        self.path = path
        self.ds = ds
        self.grid = grid
        self.nodata = ds.nodata
        self.resampling = resampling
        self.crs = horizontal_crs(ds.crs)  # a DEM's vertical datum does not move its grid
        self.direct = (
            self.crs == grid.crs
            and (ds.width, ds.height) == (grid.width, grid.height)
            and all(
                abs(a - b) < 1e-6 * grid.res[0]
                for a, b in zip(ds.transform[:6], grid.transform[:6], strict=True)
            )
        )
        self.offset = (0, 0)
        if not self.direct and self.crs == grid.crs:
            # Same CRS and resolution on an aligned pixel grid: read a window, no warping.
            t, g = ds.transform, grid.transform
            col, row = (~t) * (g.c, g.f)
            if (
                abs(t.a - g.a) < 1e-9 * abs(g.a)
                and abs(t.e - g.e) < 1e-9 * abs(g.e)
                and abs(col - round(col)) < 1e-6
                and abs(row - round(row)) < 1e-6
                and t.b == 0
                and t.d == 0
                and g.b == 0
                and g.d == 0
            ):
                self.direct, self.offset = True, (round(row), round(col))
        self.vrt = None
        self.whole_cells = False
        if not self.direct:
            options: dict[str, Any] = {}
            if resampling == Resampling.average:
                # a cell with any nodata pixel in its footprint is nodata (module docstring)
                options["NODATA_VALUES_PCT_THRESHOLD"] = 0
                self.whole_cells = True
            self.vrt = WarpedVRT(
                ds,
                src_crs=self.crs,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=resampling,
                add_alpha=True,
                **options,
            )

    @property
    def method(self) -> str:
        """The resampling used, by name ("none" when read directly)."""
        return "none" if self.vrt is None else self.resampling.name

    def _inside(self, window: Window) -> np.ndarray:
        """(h, w) True where a target cell's footprint lies wholly inside the source.

        A cell is inside when its four corners are. Across CRSs the corners are projected
        every ``CORNER_STEP`` cells and interpolated bilinearly between (a projection bends
        by far less than a pixel over 16 cells: about 0.004 m over 160 m for UTM to
        geographic), which keeps a full-width chip row at a few thousand projected points.
        """
        h, w = int(window.height), int(window.width)
        rows = np.arange(h + 1, dtype=np.float64)
        cols = np.arange(w + 1, dtype=np.float64)
        if self.crs == self.grid.crs:
            cc, rr = np.meshgrid(cols + window.col_off, rows + window.row_off)
            c, r = ~self.ds.transform * (self.grid.transform * (cc, rr))
        else:
            rk = np.unique(np.r_[rows[::CORNER_STEP], rows[-1]])
            ck = np.unique(np.r_[cols[::CORNER_STEP], cols[-1]])
            cc, rr = np.meshgrid(ck + window.col_off, rk + window.row_off)
            x, y = self.grid.transform * (cc, rr)
            xs, ys = transform_points(self.grid.crs, self.crs, x.ravel(), y.ravel())
            ck_src, rk_src = ~self.ds.transform * (np.asarray(xs), np.asarray(ys))
            c = _interp2(ck_src.reshape(cc.shape), rk, ck, rows, cols)
            r = _interp2(rk_src.reshape(cc.shape), rk, ck, rows, cols)
        eps = 1e-6
        ok = (c >= -eps) & (c <= self.ds.width + eps) & (r >= -eps) & (r <= self.ds.height + eps)
        return ok[:-1, :-1] & ok[1:, :-1] & ok[:-1, 1:] & ok[1:, 1:]

    def read(self, bidx: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(bands, h, w) values and (h, w) validity of ``window`` of the target grid."""
        try:
            if self.vrt is not None:
                data = self.vrt.read(list(bidx), window=window)
                valid = self.vrt.read(self.vrt.count, window=window) >= 128
                if self.whole_cells:
                    valid &= self._inside(window)
            else:
                data, valid = self._read_direct(bidx, window)
        except RasterioError as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{self.path}: read failed ({msg})") from exc
        if data.dtype.kind == "f":
            valid &= np.all(np.isfinite(data), axis=0)
        return data, valid

    def _read_direct(self, bidx: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
        r, c = self.offset
        w = Window(window.col_off + c, window.row_off + r, window.width, window.height)
        data = self.ds.read(list(bidx), window=w, boundless=True, fill_value=self.nodata or 0)
        valid = np.ones(data.shape[1:], bool)
        inside = (
            w.col_off >= 0
            and w.row_off >= 0
            and w.col_off + w.width <= self.ds.width
            and w.row_off + w.height <= self.ds.height
        )
        if not inside:
            rows = np.arange(w.row_off, w.row_off + w.height)
            cols = np.arange(w.col_off, w.col_off + w.width)
            valid &= ((rows >= 0) & (rows < self.ds.height))[:, None]
            valid &= ((cols >= 0) & (cols < self.ds.width))[None, :]
        if self.nodata is not None and not np.isnan(self.nodata):
            valid &= np.all(data != self.nodata, axis=0)
        return data, valid

    def close(self) -> None:
        if self.vrt is not None:
            self.vrt.close()


def _interp2(
    vals: np.ndarray, rk: np.ndarray, ck: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Bilinear interpolation of ``vals`` sampled at (``rk``, ``ck``) onto ``rows`` x ``cols``."""
    along = np.stack([np.interp(cols, ck, v) for v in vals])  # (len(rk), len(cols))
    i = np.clip(np.searchsorted(rk, rows, side="right") - 1, 0, max(len(rk) - 2, 0))
    if len(rk) == 1:
        return np.repeat(along, len(rows), axis=0)
    t = ((rows - rk[i]) / (rk[i + 1] - rk[i]))[:, None]
    return along[i] * (1 - t) + along[i + 1] * t
