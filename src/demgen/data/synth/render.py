"""Render Sentinel-2-like L2A reflectance (B2, B3, B4, B8) from land cover and a DSM.

Physics kept deliberately simple but real: per-class spectra with texture, Lambertian direct
sun + sky-view diffuse light from the DSM normals (true pixel size), ray-marched cast shadows,
elevation-dependent haze (path radiance ~ exp(-h / 8000 m)) and optional fBm clouds with their
ground shadows. All per-pixel randomness is hashed from global coordinates, so tiles are seamless.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from demgen.data.synth.terrain import (
    CROP,
    FOREST,
    GRASS,
    ROCK,
    SAND,
    SNOW,
    URBAN,
    WATER,
    block_fields,
    fbm,
    hash_unit,
    mix_key,
    parcel_fields,
)
from demgen.io.geodesy import sun_vector

BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B8")
HAZE_SCALE_HEIGHT = 8000.0  # metres
CLOUD_HEIGHT = 1500.0  # metres above ground, for cloud-shadow displacement

# Surface reflectance per class (B2 blue, B3 green, B4 red, B8 NIR).
SPECTRA: dict[int, tuple[float, float, float, float]] = {
    WATER: (0.050, 0.055, 0.030, 0.012),
    SAND: (0.150, 0.190, 0.240, 0.300),
    GRASS: (0.035, 0.070, 0.045, 0.320),
    CROP: (0.035, 0.075, 0.045, 0.420),
    FOREST: (0.020, 0.038, 0.022, 0.250),
    ROCK: (0.110, 0.125, 0.140, 0.190),
    SNOW: (0.880, 0.870, 0.850, 0.720),
    URBAN: (0.090, 0.100, 0.110, 0.160),
}
CROP_VARIANTS = np.array(
    [
        (0.030, 0.075, 0.035, 0.470),  # green crop
        (0.085, 0.110, 0.150, 0.230),  # bare soil
        (0.065, 0.095, 0.125, 0.280),  # ripe / stubble
        (0.040, 0.080, 0.060, 0.360),  # meadow
    ],
    dtype=np.float32,
)
ROOF_VARIANTS = np.array(
    [
        (0.070, 0.080, 0.150, 0.200),  # red tiles
        (0.120, 0.130, 0.140, 0.180),  # concrete
        (0.060, 0.065, 0.070, 0.110),  # dark roofing
        (0.160, 0.170, 0.175, 0.210),  # bright metal
    ],
    dtype=np.float32,
)
STREET = np.array((0.070, 0.075, 0.080, 0.100), dtype=np.float32)
CLOUD = np.array((0.62, 0.63, 0.64, 0.66), dtype=np.float32)
# Spectral shape of path radiance (Rayleigh-like, strongest in blue) and diffuse sky fraction.
PATH = np.array((0.35, 0.25, 0.15, 0.07), dtype=np.float32)
SKY = np.array((0.35, 0.25, 0.18, 0.10), dtype=np.float32)


def shadow_steps(
    azimuth: float, elevation: float, pixel_size: float, max_px: int, relief: float
) -> list[tuple[int, int, float]]:
    """(drow, dcol, rise) steps of the sun ray march, deduplicated and bounded by relief.

    `rise` is the height (metres) the ray gains over that horizontal distance; steps whose rise
    exceeds `relief` (max DSM minus the lowest receiver) can never occlude, so they are dropped.
    """
    az = math.radians(azimuth)
    tan_el = math.tan(math.radians(elevation))
    out: list[tuple[int, int, float]] = []
    seen: set[tuple[int, int]] = set()
    for k in range(1, max(0, int(max_px)) + 1):
        dr = int(round(-k * math.cos(az)))
        dc = int(round(k * math.sin(az)))
        if (dr, dc) in seen or (dr, dc) == (0, 0):
            continue
        seen.add((dr, dc))
        rise = math.hypot(dr, dc) * pixel_size * tan_el
        if rise <= relief:
            out.append((dr, dc, rise))
    return out


def cast_shadow(
    dsm_pad: np.ndarray, top: int, left: int, shape: tuple[int, int], steps, soft: float
) -> np.ndarray:
    """Shadow fraction (0 lit .. 1 shadowed) of the tile at (top, left) of a -inf padded DSM."""
    th, tw = shape
    z = dsm_pad[top : top + th, left : left + tw]
    horizon = np.full(shape, -np.inf, dtype=np.float32)
    tmp = np.empty(shape, dtype=np.float32)
    for dr, dc, rise in steps:
        sl = dsm_pad[top + dr : top + dr + th, left + dc : left + dc + tw]
        np.subtract(sl, np.float32(rise), out=tmp)
        np.maximum(horizon, tmp, out=horizon)
    return np.clip((horizon - z) * np.float32(1.0 / soft), 0, 1)


def cloud_cover_field(xm: np.ndarray, ym: np.ndarray, seed: int, cover: float) -> np.ndarray | None:
    """Cloud opacity in [0, 1] (None when cover is 0); the opaque part covers ~`cover` of area."""
    if cover <= 0:
        return None
    n = fbm(xm, ym, 6000.0, 6, mix_key(seed, "cloud"), gain=0.55)
    # this fBm is ~N(0, 0.165), so a Gaussian quantile calibrates the covered fraction
    thr = -10.0 if cover >= 1 else 0.165 * NormalDist().inv_cdf(1.0 - cover)
    return np.clip((n - np.float32(thr)) * np.float32(8.0) + np.float32(0.5), 0, 1)


def render_tile(
    dsm_pad: np.ndarray,
    top: int,
    left: int,
    dtm: np.ndarray,
    lc: np.ndarray,
    xm: np.ndarray,
    ym: np.ndarray,
    gcol: np.ndarray,
    grow: np.ndarray,
    *,
    seed: int,
    pixel_size: float,
    sun_azimuth: float,
    sun_elevation: float,
    haze: float,
    cloud_cover: float,
    steps: list[tuple[int, int, float]],
    normals_dsm: np.ndarray,
    surface: Callable[[np.ndarray], np.ndarray] | None = None,
    cloud_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one tile: returns (uint16 (4, H, W) reflectance x 10000, uint8 cloud mask).

    normals_dsm is the tile DSM with a 1-pixel edge-replicated rim (for normals); dsm_pad is the
    DSM with the shadow halo (-inf outside the scene), the tile starting at (top, left).
    xm (1, W), ym (H, 1) are map coordinates; gcol, grow global pixel indices (for noise).
    Hooks for time series (:mod:`demgen.data.synth.timeseries`): `surface` maps the (H, W, 4)
    class reflectance to the one rendered (phenology, construction); `cloud_seed` draws the
    clouds from their own seed, so each date gets new clouds over the same ground.
    """
    f = np.float32
    th, tw = lc.shape
    z = normals_dsm
    inv2 = f(0.5 / pixel_size)
    dzdx = (z[1:-1, 2:] - z[1:-1, :-2]) * inv2
    dzdy = (z[:-2, 1:-1] - z[2:, 1:-1]) * inv2  # northward
    inv_n = f(1) / np.sqrt(f(1) + dzdx * dzdx + dzdy * dzdy)
    sx, sy, sz = sun_vector(sun_azimuth, sun_elevation)
    cos_i = (f(sz) - dzdx * f(sx) - dzdy * f(sy)) * inv_n
    direct = np.maximum(cos_i, f(0))
    soft = 0.5 * pixel_size * math.tan(math.radians(sun_elevation)) + 0.5
    shadow = cast_shadow(dsm_pad, top, left, (th, tw), steps, soft)
    direct = direct * (f(1) - shadow)
    svf = (f(1) + inv_n) * f(0.5)

    ck = seed if cloud_seed is None else cloud_seed
    clouds = cloud_cover_field(xm, ym, ck, cloud_cover)
    if clouds is not None:
        d = CLOUD_HEIGHT / math.tan(math.radians(sun_elevation))
        sxh, syh = d * math.sin(math.radians(sun_azimuth)), d * math.cos(math.radians(sun_azimuth))
        cshadow = cloud_cover_field(xm + sxh, ym + syh, ck, cloud_cover)
        assert cshadow is not None
        direct = direct * (f(1) - f(0.85) * cshadow)

    # surface reflectance: class spectra, parcel / roof variants, texture
    table = np.zeros((9, 4), dtype=np.float32)
    for k, v in SPECTRA.items():
        table[k] = v
    refl = table[lc]  # (H, W, 4)
    is_crop = lc == CROP
    is_urban = lc == URBAN
    if is_crop.any():
        p = parcel_fields(xm, ym, seed)
        kind = np.broadcast_to(p["kind"], lc.shape)
        idx = np.minimum((kind * f(4)).astype(np.int64), 3)
        refl[is_crop] = CROP_VARIANTS[idx[is_crop]]
    if is_urban.any():
        b = block_fields(xm, ym, seed)
        roof = np.broadcast_to(b["roof"], lc.shape)
        idx = np.minimum((roof * f(4)).astype(np.int64), 3)
        street = np.broadcast_to(b["street"], lc.shape)
        refl[is_urban] = ROOF_VARIANTS[idx[is_urban]]
        refl[is_urban & street] = STREET
    if surface is not None:
        refl = surface(refl)
    tex = fbm(xm, ym, 240.0, 3, mix_key(seed, "tex"))
    grain = hash_unit(gcol, grow, mix_key(seed, "grain"))
    tex_amp = np.where(lc == WATER, f(0.05), np.where(lc == SNOW, f(0.04), f(0.14)))
    mult = f(1) + tex_amp * tex + (grain - f(0.5)) * f(0.06)
    # forests near the tree line are darker conifers; wet grass greener
    is_forest_or_grass = (lc == FOREST) | (lc == GRASS)
    mult = np.where(is_forest_or_grass, mult * (f(1) - f(0.1) * tex), mult)

    trans_h = np.exp(dtm * f(-1.0 / HAZE_SCALE_HEIGHT)).astype(np.float32)
    out = np.empty((4, th, tw), dtype=np.uint16)
    mask = (clouds > 0.5).astype(np.uint8) if clouds is not None else np.zeros(lc.shape, np.uint8)
    sin_el = f(sz)
    for b in range(4):
        sky = SKY[b]
        irr = (direct * (f(1) - sky) + svf * sky) / ((f(1) - sky) * sin_el + sky)
        surf = refl[..., b] * mult * irr
        path = f(haze) * PATH[b] * trans_h
        trans = f(1) - path * f(0.5)
        L = surf * trans + path
        if clouds is not None:
            L = L * (f(1) - clouds) + (CLOUD[b] * (f(0.85) + f(0.15) * tex)) * clouds
        out[b] = np.clip(np.rint(L * f(10000)), 1, 65535).astype(np.uint16)
    return out, mask
