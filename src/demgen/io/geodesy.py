"""One place for geodetic facts about a grid: pixel size in metres, vertical datum.

Pixel size in metres, per axis, at the grid's centre:

- projected CRS: the pixel size times the CRS's linear unit in metres
  (``linear_units_factor``: 0.3048 for international feet, 0.3048006 for US survey feet),
  divided by the point scale factor for Mercator grids (:func:`mercator_scale`: web tiles
  in EPSG:3857 are 1/cos(lat) too large on the ground);
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
    scale = mercator_scale(crs, transform, width, height) if crs is not None else 1.0
    return px * unit / scale, py * unit / scale


def mercator_scale(crs: CRS, transform: Affine, width: int, height: int) -> float:
    """The point scale factor of a Mercator grid at its centre, else 1.

    Mercator (EPSG:3857 web tiles, EPSG:3395) stretches the ground by k = k0 / cos(lat)
    (Snyder 1987, *Map Projections: A Working Manual*, eq. 7-8, spherical form; k0 is the
    scale at the equator, ``cos(lat_ts)`` for the variant with a true-scale latitude), so a
    "10 m" web-Mercator pixel at 47 N covers 6.8 m of ground. Transverse Mercator (UTM)
    keeps k within 0.9996..1.0010 of its zone and is taken at face value, like every other
    projection whose distortion is a fraction of a percent.
    """
    try:
        params = crs.to_dict()
    except Exception:
        return 1.0
    if params.get("proj") != "merc":
        return 1.0
    from rasterio.warp import transform as warp_points

    cx = transform.c + transform.a * width / 2.0 + transform.b * height / 2.0
    cy = transform.f + transform.d * width / 2.0 + transform.e * height / 2.0
    _, lats = warp_points(crs, "EPSG:4326", [cx], [cy])
    k0 = float(params.get("k", params.get("k_0", 1.0))) * math.cos(
        math.radians(float(params.get("lat_ts", 0.0)))
    )
    return k0 / math.cos(math.radians(max(-89.9, min(89.9, lats[0]))))


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


def sun_vector(azimuth: float, elevation: float) -> tuple[float, float, float]:
    """Unit vector towards the sun in (east, north, up) for azimuth clockwise from north and
    elevation above the horizon, in degrees: the one illumination direction of the renderer
    and of the relief features a DEM -> image model sees."""
    az, el = math.radians(azimuth), math.radians(elevation)
    return (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))
