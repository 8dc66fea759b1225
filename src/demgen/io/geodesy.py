"""One place for geodetic facts about a grid: pixel size in metres, vertical datum.

Pixel size in metres, per axis, at the grid's centre:

- projected CRS: the pixel size times the CRS's linear unit in metres
  (``linear_units_factor``: 0.3048 for international feet, 0.3048006 for US survey feet);
- geographic CRS (degrees): the lengths of one degree of longitude and of latitude on the
  WGS84 ellipsoid at the centre latitude phi (Torge & Müller, *Geodesy*, 4th ed., 3.2):

      N(phi) = a / sqrt(1 - e^2 sin^2 phi)                  (prime vertical radius)
      M(phi) = a (1 - e^2) / (1 - e^2 sin^2 phi)^(3/2)      (meridional radius)
      x: N cos(phi) * pi / 180 metres per degree of longitude
      y: M * pi / 180 metres per degree of latitude

  with a = 6378137 m and e^2 = 0.00669437999014 (WGS84). GLO-30 and SRTM grids are
  WGS84; other datums differ by far less than a pixel's rounding (< 1e-4 relative).

Over a 1-degree tile the x size changes with latitude (about 0.03 % per 0.1 degree at
40 N), which is below what slope or NMAD resolve; callers that need exactness across a
large geographic raster compute per window (``pixel_size_m`` takes any sub-grid).
"""

from __future__ import annotations

import math
from typing import Any

from rasterio.crs import CRS
from rasterio.transform import Affine

WGS84_A = 6_378_137.0  # semi-major axis (m)
WGS84_E2 = 0.00669437999014  # first eccentricity squared
UNKNOWN_DATUM = "unknown"
VERTICAL_CRS_TAG = "vertical_crs"


def degree_lengths_m(lat_deg: float) -> tuple[float, float]:
    """Metres per degree of longitude and of latitude at latitude ``lat_deg`` (WGS84)."""
    phi = math.radians(lat_deg)
    w = 1.0 - WGS84_E2 * math.sin(phi) ** 2
    n = WGS84_A / math.sqrt(w)
    m = WGS84_A * (1.0 - WGS84_E2) / w**1.5
    return n * math.cos(phi) * math.pi / 180.0, m * math.pi / 180.0


def linear_unit_m(crs: CRS | None) -> float:
    """Metres per linear unit of a projected CRS (1 when unknown or absent)."""
    if crs is None:
        return 1.0
    try:
        factor = crs.linear_units_factor[1]
    except Exception:  # CRS without linear units (rasterio raises CRSError)
        return 1.0
    return float(factor) if factor else 1.0


def pixel_size_m(
    crs: CRS | str | None, transform: Affine, width: int, height: int
) -> tuple[float, float]:
    """Pixel size (x, y) in metres at the grid's centre (see the module docstring)."""
    px, py = abs(transform.a), abs(transform.e)
    if crs is not None and not isinstance(crs, CRS):
        crs = CRS.from_user_input(crs)
    if crs is not None and crs.is_geographic:
        lat = transform.f + transform.e * height / 2.0 + transform.d * width / 2.0
        mx, my = degree_lengths_m(max(-90.0, min(90.0, lat)))
        return px * mx, py * my
    unit = linear_unit_m(crs)
    return px * unit, py * unit


def pixel_size_m_of(ds: Any) -> tuple[float, float]:
    """Pixel size (x, y) in metres of an open rasterio dataset (or WarpedVRT)."""
    return pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)


def mean_pixel_size_m(size: tuple[float, float]) -> float:
    """The geometric mean of the (x, y) pixel size: one number for a resolution check."""
    return math.sqrt(size[0] * size[1])


def vertical_crs_of(ds: Any) -> str:
    """The vertical datum a raster declares, or ``"unknown"``.

    Read from a compound CRS's vertical part (e.g. EPSG:32633+5773 -> "EGM96 height"),
    else from the ``vertical_crs`` metadata tag demgen writes on every height raster.
    """
    crs = getattr(ds, "crs", None)
    if crs is not None:
        try:
            wkt = crs.to_wkt()
        except Exception:
            wkt = ""
        if wkt.startswith("COMPD_CS") or wkt.startswith("COMPOUNDCRS"):
            import re

            m = re.search(r'(?:VERT_CS|VERTCRS)\["([^"]+)"', wkt)
            if m:
                return m.group(1)
    tag = ds.tags().get(VERTICAL_CRS_TAG) if hasattr(ds, "tags") else None
    return tag or UNKNOWN_DATUM


_HORIZONTAL_KEYWORDS = ("PROJCS", "GEOGCS", "PROJCRS", "GEOGCRS", "GEODCRS", "GEOCCS")


def horizontal_crs(crs: CRS | None) -> CRS | None:
    """The horizontal part of a compound CRS (EPSG:32633+5773 -> EPSG:32633), else ``crs``.

    Grids are compared and warped on their horizontal CRS alone, so a DEM that declares
    its vertical datum lies on the same grid as an image in the plain projected CRS (read
    directly, not warped). The vertical part is what :func:`vertical_crs_of` reports.
    """
    if crs is None:
        return None
    wkt = crs.to_wkt()
    if not (wkt.startswith("COMPD_CS") or wkt.startswith("COMPOUNDCRS")):
        return crs
    depth, start, in_str = 0, None, False
    for i, ch in enumerate(wkt):
        if ch == '"':
            in_str = not in_str
        elif in_str:
            continue
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 1 and start is not None:
                part = CRS.from_wkt(wkt[start : i + 1])
                epsg = part.to_epsg()
                return CRS.from_epsg(epsg) if epsg else part
        elif ch == "," and depth == 1:
            rest = wkt[i + 1 :].lstrip()
            if start is None and rest.startswith(_HORIZONTAL_KEYWORDS):
                start = i + 1 + (len(wkt) - i - 1 - len(rest))
    return crs
