"""The one explicit target grid every downloaded layer is warped onto.

A download names its ground by a longitude/latitude box (W, S, E, N, the box STAC searches
take) and optionally a CRS and a resolution. The grid is:

- CRS: the one given, else the UTM zone (WGS84, EPSG:326zz north / 327zz south) of the box
  centre, zone = floor((lon + 180) / 6) + 1 (the Norway and Svalbard exceptions of the
  MGRS grid are not applied: outside them the zones agree);
- resolution: the one given (in the CRS's units), else the image collection's native
  one (Sentinel-2: 10 m, Landsat: 30 m, a DEM alone: 30 m);
- bounds: the box's footprint in that CRS (densified edges), snapped *outward* to whole
  multiples of the resolution, so grids of neighbouring boxes share pixel edges and the
  whole box is covered. ``width = (right - left) / res`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from demgen.errors import InputError
from demgen.io.grid import Grid

MAX_PIXELS = 40_000 * 40_000  # a guard against a box in degrees read as metres


def parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``W,S,E,N`` in degrees (text or four numbers), checked."""
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise InputError(f"--bbox {text!r}: expected four numbers W,S,E,N") from None
    if len(vals) != 4:
        raise InputError(f"--bbox {text!r}: expected four numbers W,S,E,N")
    w, s, e, n = vals
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise InputError(
            f"--bbox {text!r}: needs -180 <= W < E <= 180 and -90 <= S < N <= 90 (degrees)"
        )
    return w, s, e, n


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone CRS holding (lon, lat): EPSG:326zz north, 327zz south."""
    zone = min(60, int(math.floor((lon + 180.0) / 6.0)) + 1)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def parse_crs(text: str | int | None) -> CRS | None:
    """``--crs``: an EPSG code (``32630``, ``EPSG:32630``) or any CRS string; None stays None."""
    if text is None or text == "":
        return None
    s = str(text).strip()
    try:
        return CRS.from_epsg(int(s)) if s.isdigit() else CRS.from_user_input(s)
    except (CRSError, ValueError) as exc:
        raise InputError(f"--crs {text!r}: not a CRS ({exc})") from None


def target_grid(
    bbox: Sequence[float], crs: CRS | None = None, resolution: float | None = None
) -> Grid:
    """The grid for ``bbox`` (W, S, E, N degrees) in ``crs`` at ``resolution`` (module doc)."""
    w, s, e, n = bbox
    crs = crs or utm_crs((w + e) / 2.0, (s + n) / 2.0)
    if resolution is None or resolution <= 0:
        raise InputError(f"--resolution {resolution}: must be positive")
    left, bottom, right, top = transform_bounds("EPSG:4326", crs, w, s, e, n, densify_pts=21)
    r = float(resolution)
    eps = 1e-9 * max(abs(left), abs(right), abs(top), abs(bottom), 1.0)
    left = math.floor((left + eps) / r) * r
    bottom = math.floor((bottom + eps) / r) * r
    right = math.ceil((right - eps) / r) * r
    top = math.ceil((top - eps) / r) * r
    width, height = round((right - left) / r), round((top - bottom) / r)
    if width * height > MAX_PIXELS:
        raise InputError(
            f"the grid would be {width} x {height} px: use a coarser --resolution "
            f"(in the units of {crs.to_string()}) or a smaller --bbox"
        )
    return Grid(crs, from_origin(left, top, r, r), width, height)


def windows(grid: Grid, size: int = 512) -> Iterator[Window]:
    """Row-major windows of at most ``size`` x ``size`` px covering the grid."""
    for r in range(0, grid.height, size):
        for c in range(0, grid.width, size):
            yield Window(c, r, min(size, grid.width - c), min(size, grid.height - r))


def n_windows(grid: Grid, size: int = 512) -> int:
    """How many windows :func:`windows` yields."""
    return -(-grid.height // size) * -(-grid.width // size)
