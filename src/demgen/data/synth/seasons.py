"""Seasons of a synthetic time series: phenology, crop calendars, snow line, sun and weather.

Everything is a function of the day of year (northern temperate mid-latitudes, the latitude
band of the UTM zones the synthetic worlds use) and of global map coordinates, so tiles stay
seamless. Reflectances are Sentinel-2 L2A-like surface values (B2, B3, B4, B8) like
:data:`demgen.data.synth.render.SPECTRA`, whose entries are the summer (peak) state here.
"""

from __future__ import annotations

import math
import random

import numpy as np

from demgen.data.synth.render import CROP_VARIANTS, SPECTRA
from demgen.data.synth.terrain import (
    CROP,
    FOREST,
    GRASS,
    PARCEL_X_M,
    PARCEL_Y_M,
    fbm,
    hash_unit,
    mix_key,
    parcel_fields,
)

YEAR_DAYS = 365.25
# Day of year of least greenness. Temperate northern NDVI troughs in January-February and
# peaks in July (MODIS land-surface phenology, Zhang et al. 2003, Remote Sens. Environ. 84,
# 471-475); a cosine through those two points is the simplest curve with that timing.
GREEN_MIN_DOY = 20.0
# Dormant spectra (B2, B3, B4, B8). Senescent grass and leafless deciduous canopy: NIR falls
# and red rises, as in dry-grass and winter-broadleaf spectra (USGS spectral library,
# Kokaly et al. 2017). Resulting surface NDVI ranges (see NDVI_RANGE): grass 0.41 -> 0.75,
# deciduous forest 0.58 -> 0.84, crops 0.21 (bare soil) -> 0.86 (green canopy), within the
# winter/summer NDVI of temperate grassland, broadleaf forest and cropland in MODIS series.
DRY_GRASS = np.array((0.060, 0.085, 0.100, 0.240), dtype=np.float32)
LEAFLESS = np.array((0.035, 0.050, 0.050, 0.190), dtype=np.float32)
BARE_SOIL = CROP_VARIANTS[1]
GREEN_CROP = CROP_VARIANTS[0]
RIPE_CROP = CROP_VARIANTS[2]
MEADOW = CROP_VARIANTS[3]
# Crop calendars: (day of year, green fraction, ripe/stubble fraction); the rest is bare soil.
# Winter cereal sown in early October, green-up in March, peak in May, harvest in mid July;
# maize sown in late April, peak in August, harvest in early October (typical central European
# calendars, FAO GIEWS country crop calendars). Each parcel shifts its calendar by +-15 days.
CROP_CALENDARS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "winter_cereal": ((0, 0.25, 0.0), (60, 0.30, 0.0), (140, 1.0, 0.0), (180, 0.25, 0.75),
                      (198, 0.0, 1.0), (200, 0.0, 0.5), (270, 0.0, 0.2), (278, 0.0, 0.0),
                      (330, 0.25, 0.0), (365, 0.25, 0.0)),
    "maize": ((0, 0.0, 0.3), (110, 0.0, 0.15), (118, 0.0, 0.0), (150, 0.15, 0.0),
              (215, 1.0, 0.0), (255, 0.45, 0.55), (275, 0.0, 1.0), (278, 0.0, 0.4),
              (365, 0.0, 0.3)),
}  # fmt: skip
CROP_SHIFT_DAYS = 15.0
# Winter lowering of the snow line (metres) below the preset's summer snow line: in the Alps
# the seasonal snow line sits near 2800-3000 m in late summer and near 1000 m in midwinter.
SNOW_DROP_M = 1800.0
# Earth's axial tilt: solar declination in degrees (Cooper 1969, Solar Energy 12, 333).
AXIAL_TILT = 23.44


def ndvi(spectrum: np.ndarray) -> float:
    """NDVI (B8 - B4) / (B8 + B4) of one (B2, B3, B4, B8) spectrum."""
    s = np.asarray(spectrum, dtype=np.float64)
    return float((s[3] - s[2]) / (s[3] + s[2]))


NDVI_RANGE: dict[str, tuple[float, float]] = {
    "grass": (ndvi(DRY_GRASS), ndvi(np.array(SPECTRA[GRASS]))),
    "forest": (ndvi(LEAFLESS), ndvi(np.array(SPECTRA[FOREST]))),
    "crop": (ndvi(BARE_SOIL), ndvi(GREEN_CROP)),
}


def greenness(doy: float) -> float:
    """Seasonal green fraction of natural vegetation, 0 at GREEN_MIN_DOY, 1 half a year later."""
    return 0.5 - 0.5 * math.cos(2.0 * math.pi * (doy - GREEN_MIN_DOY) / YEAR_DAYS)


def snow_line(summer_line: float, doy: float, drop: float = SNOW_DROP_M) -> float:
    """Seasonal snow line (metres): the summer line lowered by `drop` x (1 - greenness)."""
    return summer_line - drop * (1.0 - greenness(doy))


def sun_elevation(equinox_elevation: float, doy: float) -> float:
    """Sun elevation at overpass: the equinox value plus the solar declination, kept in [8, 85]."""
    decl = AXIAL_TILT * math.sin(2.0 * math.pi * (284.0 + doy) / 365.0)
    return float(min(85.0, max(8.0, equinox_elevation + decl)))


def date_weather(
    seed: int, index: int, cloud_mean: float, haze: float, clear: bool
) -> tuple[float, float]:
    """(cloud cover, haze) of date `index`: cover ~ exponential with mean `cloud_mean`, capped
    at 0.9 (0 when `clear`); haze varies by 0.5-1.5x around the scene's value."""
    rng = random.Random(mix_key(seed, "weather", index))
    u_cloud, u_haze = rng.random(), rng.random()
    cover = 0.0 if clear or cloud_mean <= 0 else min(0.9, -cloud_mean * math.log1p(-u_cloud))
    return cover, float(min(1.0, max(0.0, haze * (0.5 + u_haze))))


def _calendar(doy: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    knots = np.array(CROP_CALENDARS[name], dtype=np.float64)
    d = np.mod(doy, 365.0)
    green = np.interp(d, knots[:, 0], knots[:, 1], period=365.0).astype(np.float32)
    ripe = np.interp(d, knots[:, 0], knots[:, 2], period=365.0).astype(np.float32)
    return green, ripe


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, 4) blend from spectrum a to spectrum b by t (N,)."""
    return a[None, :] + (b - a)[None, :] * t[:, None]


def seasonal_surface(
    refl: np.ndarray, lc: np.ndarray, xm: np.ndarray, ym: np.ndarray, seed: int, doy: float
) -> np.ndarray:
    """Replace the summer spectra of grass, forest and crop pixels by their state on `doy`.

    refl (H, W, 4) is the class reflectance of land cover `lc` (modified in place and returned);
    forests mix deciduous and evergreen stands by a low-frequency noise share, crop parcels
    follow a winter-cereal or maize calendar (or stay meadow), shifted per parcel.
    """
    f = np.float32
    g = f(greenness(doy))
    grass = lc == GRASS
    if grass.any():
        refl[grass] = _lerp(DRY_GRASS, np.asarray(SPECTRA[GRASS], np.float32), np.full(1, g))
    forest = lc == FOREST
    if forest.any():
        n = np.broadcast_to(fbm(xm, ym, 1500.0, 2, mix_key(seed, "decid")), lc.shape)
        decid = np.clip(f(0.65) + f(1.5) * n, 0, 1)[forest]
        t = f(1) - decid * (f(1) - g)
        refl[forest] = _lerp(LEAFLESS, np.asarray(SPECTRA[FOREST], np.float32), t)
    crop = lc == CROP
    if crop.any():
        kind = np.broadcast_to(parcel_fields(xm, ym, seed)["kind"], lc.shape)[crop]
        pxi = np.floor(xm / PARCEL_X_M).astype(np.int64)
        pyi = np.floor(ym / PARCEL_Y_M).astype(np.int64)
        shift = np.broadcast_to(hash_unit(pxi, pyi, mix_key(seed, "sow")), lc.shape)[crop]
        d = doy - (shift.astype(np.float64) * 2.0 - 1.0) * CROP_SHIFT_DAYS
        out = np.empty((kind.size, 4), dtype=np.float32)
        for name, sel in (
            ("winter_cereal", kind < 0.45),
            ("maize", (kind >= 0.45) & (kind < 0.85)),
        ):
            gr, rp = _calendar(d[sel], name)
            out[sel] = (
                BARE_SOIL[None] * (f(1) - gr - rp)[:, None]
                + GREEN_CROP[None] * gr[:, None]
                + RIPE_CROP[None] * rp[:, None]
            )
        meadow = kind >= 0.85
        out[meadow] = _lerp(DRY_GRASS, MEADOW, np.full(int(meadow.sum()), g))
        refl[crop] = out
    return refl
