"""One resampling rule for every raster demgen warps onto a coarser or finer grid.

By the shrink factor ``s`` = destination pixel size / source pixel size, both in metres
(:mod:`demgen.io.geodesy`, so degrees and feet compare correctly):

- continuous layers (heights, imagery, extra layers): ``average`` when ``s >= 1.5``, else
  ``bilinear``. GDAL's bilinear does not average when shrinking: a 10 x 10 m building 10 m
  tall in a 1 m DSM came out 5.6 m tall on a 10 m grid, with 0.94 m spilled on each side;
  the average keeps 10 m. Below 1.5x a coarse cell covers one or two source pixels, where
  bilinear is the smoother choice.
- masks (non-zero = flagged, e.g. clouds): ``max`` when ``s >= 1.5`` (a cell is flagged
  when any fine pixel is), else ``nearest``.

Prepare (:mod:`demgen.data.warp`), evaluate (:mod:`demgen.evaluation_grid`) and download
(:mod:`demgen.sources.read`) all take their resampling from here.
"""

from __future__ import annotations

from typing import Any

from rasterio.enums import Resampling

from demgen.io.geodesy import mean_pixel_size_m, pixel_size_m, pixel_size_m_of

AVERAGE_FROM_SHRINK = 1.5  # destination / source pixel size from which cells are averaged
CONTINUOUS, MASK = "continuous", "mask"


def shrink_factor(ds: Any, grid: Any) -> float:
    """Destination over source pixel size, both in metres (> 1: downsampling). ``grid`` is
    anything with ``crs``, ``transform``, ``width`` and ``height``."""
    src = mean_pixel_size_m(pixel_size_m_of(ds))
    dst = mean_pixel_size_m(pixel_size_m(grid.crs, grid.transform, grid.width, grid.height))
    return dst / src if src > 0 else 1.0


def resampling_for(kind: str, shrink: float, method: str = "auto") -> Resampling:
    """The resampling of a ``kind`` layer (CONTINUOUS or MASK) shrunk by ``shrink``."""
    if method != "auto":
        return Resampling[method]
    coarse = shrink >= AVERAGE_FROM_SHRINK
    if kind == MASK:
        return Resampling.max if coarse else Resampling.nearest
    return Resampling.average if coarse else Resampling.bilinear
