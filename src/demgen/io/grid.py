"""The one raster grid type: a CRS, an affine transform and a shape (width, height).

Alignment (:mod:`demgen.data.align`), downloads (:mod:`demgen.sources`) and the 3D viewer
(:mod:`demgen.viz.viewer`) all describe "where the pixels are" with this one class, so a
grid built by one is read the same way by the others. Fields follow rasterio's order
(width before height); pass them by keyword where the order could be misread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rasterio.crs import CRS
from rasterio.transform import Affine

from demgen.io.geodesy import pixel_size_m
from demgen.io.raster import grid_bounds

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, affine transform and shape (``width`` columns, ``height`` rows)."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS units."""
        return grid_bounds(self.transform, self.width, self.height)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units (degrees for a geographic grid)."""
        return abs(self.transform.a), abs(self.transform.e)

    def pixel_size_m(self) -> tuple[float, float]:
        """Pixel size (x, y) in metres at the centre (:func:`demgen.io.geodesy.pixel_size_m`).

        Geographic grids use the WGS84 degree lengths at the centre latitude, so a mesh's
        horizontal scale, and with it slopes and vertical exaggeration, match the ground
        (a 1 arc-second grid at 45 N is 21.90 x 30.87 m).
        """
        return pixel_size_m(self.crs, self.transform, self.width, self.height)

    def scaled(self, height: int, width: int) -> Grid:
        """The same extent sampled with ``height`` x ``width`` cells (rows, then columns)."""
        t = self.transform * Affine.scale(self.width / width, self.height / height)
        return Grid(self.crs, t, width=width, height=height)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for manifests and JSON sidecars."""
        return {
            "crs": self.crs.to_string(),
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
        }
