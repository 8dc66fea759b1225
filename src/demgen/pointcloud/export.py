"""``demgen points``: a DEM as a point cloud, one point per valid cell, optionally coloured.

Each valid cell (not nodata, finite) becomes one point at the cell's centre, in the DEM's
CRS (written as the LAS OGC WKT record), with the cell's height (coordinates in
millimetres, LAS scale 0.001). A DEM tagged ``heights=relative`` (``demgen predict``
without a reference) is flagged relative in the header (:mod:`demgen.pointcloud.lasio`).
Gridding the file with ``demgen lidar`` at the DEM's resolution gives the DEM back, to
the millimetre.

**Colour** (``--image``): the image is reprojected onto the DEM grid (bilinear, rasterio's
WarpedVRT, any CRS); bands B4, B3, B2 by description when present (Sentinel-2 red, green,
blue), else the first three (one band: grey). LAS colour channels are 16-bit: 8-bit
images are scaled by 257 (255 -> 65535 exactly), others are stretched linearly between
their 2nd and 98th percentiles (as ``demgen view`` does), measured on a decimated read of
at most 1024 x 1024 pixels. Cells where the image has no data are black.

Rows are processed in blocks of about one million cells, so memory stays bounded for any
DEM size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from tqdm.auto import tqdm

from demgen.errors import InputError
from demgen.io.geodesy import vertical_crs_of
from demgen.io.raster import band_names, grid_bounds, open_raster, require_crs
from demgen.pointcloud.lasio import LAS_SUFFIXES, write_las

CHUNK_CELLS = 1_000_000
PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE = 1024  # pixels per side of the decimated read for the colour stretch


def _select_bands(ds: rasterio.io.DatasetReader) -> list[int]:
    desc = band_names(ds)
    if all(b in desc for b in ("B4", "B3", "B2")):
        return [desc.index(b) + 1 for b in ("B4", "B3", "B2")]
    return [1, 2, 3] if ds.count >= 3 else [1, 1, 1]


class _Colour:
    """The image on the DEM grid, read by row windows and scaled to 16 bits."""

    def __init__(self, path: Path, dem: rasterio.io.DatasetReader) -> None:
        self._cm = open_raster(path)
        src = self._cm.__enter__()
        require_crs(src, path)
        if dem.crs is None:
            raise InputError("--image needs a DEM with a CRS to place the image on")
        self.bands = _select_bands(src)
        self.eight_bit = src.dtypes[self.bands[0] - 1] == "uint8"
        self.vrt = WarpedVRT(
            src, crs=dem.crs, transform=dem.transform, width=dem.width, height=dem.height,
            resampling=Resampling.bilinear, src_nodata=src.nodata, nodata=src.nodata,
        )  # fmt: skip
        self.nodata = src.nodata
        self.lo = self.hi = None
        if not self.eight_bit:
            scale = max(dem.width, dem.height) / STRETCH_SAMPLE
            shape = (
                max(1, int(dem.height / max(scale, 1))),
                max(1, int(dem.width / max(scale, 1))),
            )
            sample = self.vrt.read(self.bands, out_shape=(3, *shape), masked=True)
            self.lo, self.hi = [], []
            for band in sample:
                v = band.compressed().astype(np.float64)
                v = v[np.isfinite(v)]
                if v.size == 0:
                    raise InputError(f"{path}: the image has no data over the DEM")
                lo, hi = np.percentile(v, PERCENTILES)
                self.lo.append(lo)
                self.hi.append(max(hi, lo + 1e-12))

    def read(self, window: Window, valid: np.ndarray) -> dict[str, np.ndarray]:
        arr = self.vrt.read(self.bands, window=window, masked=True)
        out = {}
        for i, name in enumerate(("red", "green", "blue")):
            band = arr[i]
            if self.eight_bit:
                v = band.filled(0).astype(np.float64) * 257.0
            else:
                v = (band.astype(np.float64).filled(np.nan) - self.lo[i]) / (
                    self.hi[i] - self.lo[i]
                )
                v = np.nan_to_num(np.clip(v, 0.0, 1.0)) * 65535.0
            out[name] = np.rint(v[valid]).astype(np.uint16)
        return out

    def close(self) -> None:
        self.vrt.close()
        self._cm.__exit__(None, None, None)


def dem_to_points(
    dem: str | Path,
    out: str | Path,
    image: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``dem`` as a LAS/LAZ point cloud at ``out`` (module docstring); returns a
    summary: points, CRS, heights (absolute/relative), vertical datum, coloured or not."""
    out = Path(out)
    if out.suffix.lower() not in LAS_SUFFIXES:
        raise InputError(f"{out}: the output must end in .las or .laz")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists (pass --overwrite to replace it)")
    with open_raster(dem) as ds:
        relative = (ds.tags().get("heights") or "").lower() == "relative"
        vertical = "relative" if relative else vertical_crs_of(ds)
        nodata = ds.nodata
        t = ds.transform
        left, bottom, _, _ = grid_bounds(t, ds.width, ds.height)
        offsets = (float(math.floor(left)), float(math.floor(bottom)), 0.0)
        colour = _Colour(Path(image), ds) if image is not None else None
        rows = max(1, CHUNK_CELLS // ds.width)
        bar = tqdm(total=ds.height, desc="points", unit="row", disable=not progress)

        def chunks():
            cols = np.arange(ds.width, dtype=np.float64) + 0.5
            for r0 in range(0, ds.height, rows):
                h = min(rows, ds.height - r0)
                win = Window(0, r0, ds.width, h)
                z = ds.read(1, window=win).astype(np.float64)
                valid = np.isfinite(z)
                if nodata is not None and not math.isnan(nodata):
                    valid &= z != nodata
                rr = (np.arange(r0, r0 + h, dtype=np.float64) + 0.5)[:, None]
                x = t.a * cols[None, :] + t.b * rr + t.c
                y = t.d * cols[None, :] + t.e * rr + t.f
                c = {"x": x[valid], "y": y[valid], "z": z[valid]}
                if colour is not None:
                    c.update(colour.read(win, valid))
                bar.update(h)
                yield c

        try:
            with bar:
                n = write_las(
                    out, chunks(), crs=ds.crs, offsets=offsets, rgb=colour is not None,
                    relative=relative, vertical=vertical,
                )  # fmt: skip
        finally:
            if colour is not None:
                colour.close()
        if n == 0:
            out.unlink(missing_ok=True)
            raise InputError(f"{dem}: the DEM has no valid cells")
        return {
            "points": n,
            "crs": ds.crs.to_string() if ds.crs else None,
            "heights": "relative" if relative else "absolute",
            "vertical_crs": vertical,
            "coloured": colour is not None,
            "resolution": (abs(t.a), abs(t.e)),
        }
