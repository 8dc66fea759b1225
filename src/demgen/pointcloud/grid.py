"""The output grid and the incremental per-cell accumulator for lidar gridding.

Points arrive in chunks; each chunk updates fixed-size per-cell arrays and is dropped, so
peak memory is the grid (about 32 bytes a cell) plus one chunk, whatever the cloud's size.

Per cell the accumulator keeps:

- the two highest first-or-only returns (``top1`` >= ``top2``, -inf when absent): the DSM
  is the highest, and the second is the in-cell support the outlier filter
  (:mod:`demgen.pointcloud.outliers`) needs to tell a lone noise return from a surface;
- the number of kept points of any return and class (``density``);
- the sum, count, minimum and maximum of the ground returns (class 2): the DTM cell value
  is their mean, and the extremes let the filter take out one bad ground point exactly.

The two highest per cell are merged exactly across chunks: a chunk is sorted by (cell,
height descending), its own first and second per cell are read off, and
``new1 = max(old1, c1)``, ``new2 = max(old2, c2, min(old1, c1))``.

Points are dropped before gridding when they are withheld or in a dropped class (default
7 low noise and 18 high noise, the ASPRS LAS 1.4 noise classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin

from demgen.errors import InputError
from demgen.io.raster import NODATA as NODATA  # re-exported: lidar.py and tests use it
from demgen.pointcloud.lasio import PointChunk

GROUND = 2  # ASPRS class 2: ground
NOISE_CLASSES = (7, 18)  # ASPRS low noise, high noise (LAS 1.4 R15, table 17)
MAX_CELLS = 400_000_000  # about 13 GB of accumulators: refuse beyond, ask for a coarser grid


@dataclass(frozen=True)
class GridSpec:
    """A north-up grid: upper-left corner (west, north), square cells of ``resolution``."""

    west: float
    north: float
    resolution: float
    width: int
    height: int
    crs: CRS | None

    @property
    def transform(self) -> Affine:
        return from_origin(self.west, self.north, self.resolution, self.resolution)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        r = self.resolution
        return self.west, self.north - r * self.height, self.west + r * self.width, self.north

    @classmethod
    def from_bounds(
        cls,
        bounds: tuple[float, float, float, float],
        resolution: float,
        crs: CRS | None,
        *,
        snap: bool = True,
    ) -> GridSpec:
        """The grid covering ``(west, south, east, north)``.

        ``snap``: the edges move outward to multiples of the resolution, so tiles gridded
        separately line up cell for cell (the data's extent); without it the grid starts at
        ``(west, north)`` exactly (a user's ``--bounds``).
        """
        w, s, e, n = (float(v) for v in bounds)
        r = float(resolution)
        if not (math.isfinite(r) and r > 0):
            raise InputError(f"--resolution must be a positive number, got {resolution!r}")
        if e < w or n < s or (not snap and (e == w or n == s)):
            raise InputError(f"bounds {w},{s},{e},{n}: need west < east and south < north")
        if snap:
            w, s = math.floor(w / r) * r, math.floor(s / r) * r
            e, n = max(math.ceil(e / r) * r, w + r), max(math.ceil(n / r) * r, s + r)
        width = max(1, math.ceil((e - w) / r - 1e-9))
        height = max(1, math.ceil((n - s) / r - 1e-9))
        if width * height > MAX_CELLS:
            raise InputError(
                f"a {width} x {height} grid at resolution {r} is too large "
                f"(over {MAX_CELLS:,} cells): use a coarser --resolution or --bounds"
            )
        return cls(w, n, r, width, height, crs)


class Accumulator:
    """Per-cell running statistics of a point cloud on a :class:`GridSpec` (module doc)."""

    def __init__(self, grid: GridSpec, drop_classes: tuple[int, ...] = NOISE_CLASSES) -> None:
        self.grid = grid
        self.drop = np.zeros(256, dtype=bool)
        self.drop[list(drop_classes)] = True
        n = grid.width * grid.height
        self.top1 = np.full(n, -np.inf, dtype=np.float32)
        self.top2 = np.full(n, -np.inf, dtype=np.float32)
        self.density = np.zeros(n, dtype=np.uint32)
        self.gsum = np.zeros(n, dtype=np.float64)
        self.gcount = np.zeros(n, dtype=np.uint32)
        self.gmin = np.full(n, np.inf, dtype=np.float32)
        self.gmax = np.full(n, -np.inf, dtype=np.float32)
        self.stats = {"read": 0, "noise": 0, "withheld": 0, "outside": 0, "kept": 0}

    def cell_index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat cell index, inside mask); points on the east/south edge join the last cell."""
        g = self.grid
        col = np.floor((x - g.west) / g.resolution)
        row = np.floor((g.north - y) / g.resolution)
        col[(col == g.width) & (x <= g.west + g.width * g.resolution)] = g.width - 1
        row[(row == g.height) & (y >= g.north - g.height * g.resolution)] = g.height - 1
        inside = (col >= 0) & (col < g.width) & (row >= 0) & (row < g.height)
        idx = row[inside].astype(np.int64) * g.width + col[inside].astype(np.int64)
        return idx, inside

    def add(self, chunk: PointChunk, z_factor: float = 1.0) -> None:
        """Grid one chunk of points (heights multiplied by ``z_factor`` into metres)."""
        n = len(chunk)
        self.stats["read"] += n
        noise = self.drop[chunk.classification]
        withheld = chunk.withheld & ~noise
        keep = ~(noise | chunk.withheld)
        self.stats["noise"] += int(noise.sum())
        self.stats["withheld"] += int(withheld.sum())
        idx, inside = self.cell_index(chunk.x[keep], chunk.y[keep])
        self.stats["outside"] += int((~inside).sum())
        self.stats["kept"] += len(idx)
        if len(idx) == 0:
            return
        z = chunk.z[keep][inside]
        if z_factor != 1.0:
            z = z * z_factor
        cls = chunk.classification[keep][inside]
        first = chunk.return_number[keep][inside] <= 1  # 0: a writer that leaves it unset

        np.add.at(self.density, idx, 1)
        self._add_top2(idx[first], z[first].astype(np.float32))
        ground = cls == GROUND
        if ground.any():
            gi, gz = idx[ground], z[ground]
            np.add.at(self.gsum, gi, gz)
            np.add.at(self.gcount, gi, 1)
            gz32 = gz.astype(np.float32)
            np.minimum.at(self.gmin, gi, gz32)
            np.maximum.at(self.gmax, gi, gz32)

    def _add_top2(self, idx: np.ndarray, z: np.ndarray) -> None:
        if len(idx) == 0:
            return
        order = np.lexsort((-z, idx))  # by cell, then height descending
        si, sz = idx[order], z[order]
        start = np.flatnonzero(np.r_[True, si[1:] != si[:-1]])
        cells, c1 = si[start], sz[start]
        nxt = start + 1
        has2 = nxt < len(si)
        has2[has2] = si[nxt[has2]] == cells[has2]
        c2 = np.full(len(cells), -np.inf, dtype=np.float32)
        c2[has2] = sz[nxt[has2]]
        old1, old2 = self.top1[cells], self.top2[cells]
        self.top1[cells] = np.maximum(old1, c1)
        self.top2[cells] = np.maximum(np.maximum(old2, c2), np.minimum(old1, c1))

    def shaped(self, name: str) -> np.ndarray:
        """One accumulator as a (height, width) view."""
        return getattr(self, name).reshape(self.grid.height, self.grid.width)
