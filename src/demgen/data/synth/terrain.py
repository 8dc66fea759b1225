"""Terrain synthesis: seamless hash-lattice gradient noise, relief presets, erosion, land cover.

Every field here is a pure function of GLOBAL map coordinates (metres) and a seed, and every
neighbourhood operation is a fixed-radius stencil, so a tile computed with a large enough halo
is bit-identical to the same pixels of an untiled scene. Only element-wise arithmetic is used
on per-pixel data (no reductions, no order-dependent sums), which keeps results exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from demgen.data.synth.noise import fbm, hash_unit, mix_key, perlin
from demgen.data.synth.noise import hash2 as hash2  # re-exported: it was defined here

if TYPE_CHECKING:
    from demgen.data.synth.climate import Climate

# Land-cover codes (uint8); 0 is unused.
WATER, SAND, GRASS, CROP, FOREST, ROCK, SNOW, URBAN = range(1, 9)
CLASSES: dict[int, str] = {
    WATER: "water",
    SAND: "sand",
    GRASS: "grass",
    CROP: "crop",
    FOREST: "forest",
    ROCK: "rock",
    SNOW: "snow",
    URBAN: "urban",
}

# Halo (pixels) that classify() consumes beyond the tile: the concavity stencil radius.
LC_HALO = 4
# Urban block grid (metres): block pitch and street width.
BLOCK_M = 90.0
STREET_M = 20.0
# Agricultural parcel grid (metres).
PARCEL_X_M = 260.0
PARCEL_Y_M = 170.0


@dataclass(frozen=True)
class Relief:
    """Fixed noise-to-metres mapping of one relief preset (scenes draw their own climate lines)."""

    name: str
    elevation_range: tuple[float, float]
    sea_level: float
    wavelength: float  # metres, largest octave
    ridge: float  # 0 = pure fBm, 1 = pure ridged multifractal
    gain: float  # contrast of the noise -> [0, 1] mapping
    bias: float  # shift of the mapping (higher = lower land)
    warp: float  # domain-warp amplitude as a fraction of the wavelength
    tree_line: float  # metres: the old fixed line; scenes draw theirs (synth/climate.py)
    snow_line: float  # metres: the old fixed line, still the time series' summer snow line
    talus_deg: float  # thermal-erosion repose angle
    urban: float  # urban-region threshold on low-frequency noise (higher = fewer towns)


PRESETS: dict[str, Relief] = {
    "plains": Relief("plains", (-40.0, 300.0), 0.0, 14000.0, 0.0, 2.2, -0.05, 0.25,
                     2000.0, 3000.0, 30.0, 0.30),
    "hills": Relief("hills", (-150.0, 1500.0), 0.0, 7000.0, 0.35, 2.6, 0.0, 0.35,
                    1700.0, 2800.0, 34.0, 0.38),
    "alpine": Relief("alpine", (200.0, 4000.0), 420.0, 6000.0, 0.8, 2.4, 0.05, 0.3,
                     2000.0, 2900.0, 40.0, 0.45),
}  # fmt: skip


def _softclip(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.float32(1) + x * x)


# --------------------------------------------------------------------------- elevation
def terrain_elevation(
    xm: np.ndarray,
    ym: np.ndarray,
    seed: int,
    relief: Relief,
    elevation_range: tuple[float, float],
    pixel_size: float,
) -> np.ndarray:
    """Raw (uneroded) elevation in metres at map coordinates xm (1, W) and ym (H, 1).

    fBm and ridged multifractal from the same octaves, blended by the preset's ridge weight
    (modulated by low-frequency noise), with the large octaves domain-warped.
    """
    lam0 = relief.wavelength
    wx = fbm(xm, ym, lam0 * 0.8, 3, mix_key(seed, "warpx"))
    wy = fbm(xm, ym, lam0 * 0.8, 3, mix_key(seed, "warpy"))
    amp_w = relief.warp * lam0
    xw = xm + wx.astype(np.float64) * amp_w
    yw = ym + wy.astype(np.float64) * amp_w
    n_oct = max(1, int(np.floor(np.log2(lam0 / (2.0 * pixel_size)))) + 1)
    n_warp = min(4, n_oct)
    f_sum = None
    r_sum = None
    weight = None
    amp, norm = 1.0, 0.0
    for i in range(n_oct):
        lam = lam0 / 2.0**i
        k = mix_key(seed, "terrain", i)
        n = perlin(xw / lam, yw / lam, k) if i < n_warp else perlin(xm / lam, ym / lam, k)
        sig = np.float32(1) - np.abs(n)
        sig = sig * sig
        if weight is not None:
            sig = sig * weight
        weight = np.clip(sig * np.float32(2), 0, 1)
        a = np.float32(amp)
        f_sum = n * a if f_sum is None else f_sum + n * a
        r_sum = sig * a if r_sum is None else r_sum + sig * a
        norm += amp
        amp *= 0.5 if i < 3 else 0.45
    assert f_sum is not None and r_sum is not None
    inv = np.float32(1.0 / norm)
    f = f_sum * inv
    r = r_sum * inv * np.float32(2.2) - np.float32(0.75)
    if relief.ridge > 0:
        mod = fbm(xm, ym, lam0 * 1.5, 2, mix_key(seed, "ridgemix"))
        w = np.clip(np.float32(relief.ridge) + mod * np.float32(0.5), 0, 1)
        # ridges ride on the broad fBm shape so valleys and massifs stay coherent
        e = f * (np.float32(1) - w * np.float32(0.5)) + r * w * np.float32(0.6)
    else:
        e = f
    t = np.float32(0.5) + np.float32(0.5) * _softclip(
        (e - np.float32(relief.bias)) * np.float32(relief.gain)
    )
    lo, hi = elevation_range
    return (np.float32(lo) + np.float32(hi - lo) * t).astype(np.float32)


# --------------------------------------------------------------------------- erosion
def erode(
    h: np.ndarray,
    iterations: int,
    pixel_size: float,
    talus_deg: float,
    relief_span: float,
) -> np.ndarray:
    """Grid hydraulic + thermal erosion; returns h cropped by 2*iterations on every side.

    Each iteration computes all transfers from the state at its start (cell and its 4 neighbours)
    and then gathers inflows from neighbours, so it is a radius-2 stencil: pixels deeper than
    2*iterations inside the input are exact, and the invalid rim is dropped as we go. Material is
    conserved (suspended sediment is deposited at the end).
    """
    if iterations <= 0:
        return h
    h = h.astype(np.float32, copy=True)
    w = np.zeros_like(h)
    s = np.zeros_like(h)
    f = np.float32
    scale = relief_span / 1500.0
    rain = f(0.02 * scale)
    k_cap = f(4.0)
    k_ero = f(0.3)
    k_dep = f(0.3)
    evap = f(0.9)
    k_th = f(0.2)
    talus = f(np.tan(np.radians(talus_deg)) * pixel_size)
    inv_px = f(1.0 / pixel_size)
    tiny = f(1e-12)
    zero = f(0)
    c, nb = (
        (slice(1, -1), slice(1, -1)),
        [
            (slice(None, -2), slice(1, -1)),  # north neighbour
            (slice(2, None), slice(1, -1)),  # south
            (slice(1, -1), slice(None, -2)),  # west
            (slice(1, -1), slice(2, None)),  # east
        ],
    )
    for _ in range(iterations):
        w = w + rain
        surf = h + w
        hc, wc, sc, sfc = h[c], w[c], s[c], surf[c]
        dw = [np.maximum(sfc - surf[k], zero) for k in nb]
        dh = [np.maximum(hc - h[k], zero) for k in nb]
        dsum = dw[0] + dw[1] + dw[2] + dw[3]
        dmax = np.maximum(np.maximum(dw[0], dw[1]), np.maximum(dw[2], dw[3]))
        wout = np.minimum(wc, dmax * f(0.5))
        hmax = np.maximum(np.maximum(dh[0], dh[1]), np.maximum(dh[2], dh[3]))
        cap = k_cap * (hmax * inv_px) * wout
        # erode (bounded by half the steepest terrain drop) or deposit
        ero = np.minimum(np.maximum(cap - sc, zero) * k_ero, hmax * f(0.5))
        dep = np.maximum(sc - cap, zero) * k_dep
        hc2 = hc - ero + dep
        sc2 = sc + ero - dep
        frac_w = wout / (wc + tiny)
        sout = sc2 * frac_w
        inv_d = np.where(dsum > 0, f(1) / (dsum + tiny), zero)
        # thermal: move material above the repose angle towards lower neighbours
        ex = [np.maximum(d - talus, zero) for d in dh]
        exsum = ex[0] + ex[1] + ex[2] + ex[3]
        exmax = np.maximum(np.maximum(ex[0], ex[1]), np.maximum(ex[2], ex[3]))
        tmove = exmax * k_th
        inv_e = np.where(exsum > 0, f(1) / (exsum + tiny), zero)
        wo = [wout * d * inv_d for d in dw]
        so = [sout * d * inv_d for d in dw]
        to = [tmove * e * inv_e for e in ex]
        # gather: cell receives from its north neighbour that neighbour's southward flow, etc.
        inner = (slice(1, -1), slice(1, -1))
        src = [
            (1, (slice(None, -2), slice(1, -1))),  # from north, its "south" flow
            (0, (slice(2, None), slice(1, -1))),  # from south, its "north" flow
            (3, (slice(1, -1), slice(None, -2))),  # from west, its "east" flow
            (2, (slice(1, -1), slice(2, None))),  # from east, its "west" flow
        ]
        w_in = sum(wo[d][sl] for d, sl in src)
        s_in = sum(so[d][sl] for d, sl in src)
        t_in = sum(to[d][sl] for d, sl in src)
        h = hc2[inner] - tmove[inner] + t_in
        w = ((wc - wout)[inner] + w_in) * evap
        s = (sc2 - sout)[inner] + s_in
    return (h + s).astype(np.float32)


# --------------------------------------------------------------------------- land cover
def block_fields(xm: np.ndarray, ym: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Urban block grid in global metres: street mask, block randoms (broadcast (H, W))."""
    bx = np.floor(xm / BLOCK_M)
    by = np.floor(ym / BLOCK_M)
    ox = xm - bx * BLOCK_M
    oy = ym - by * BLOCK_M
    street = (ox < STREET_M) | (oy < STREET_M)
    ix, iy = bx.astype(np.int64), by.astype(np.int64)
    return {
        "street": street,
        "height": hash_unit(ix, iy, mix_key(seed, "bh")),
        "roof": hash_unit(ix, iy, mix_key(seed, "roof")),
        "cx": (bx + 0.5) * BLOCK_M,
        "cy": (by + 0.5) * BLOCK_M,
    }


def parcel_fields(xm: np.ndarray, ym: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Agricultural parcel grid (global metres): per-parcel randoms for crop presence and type."""
    px = np.floor(xm / PARCEL_X_M).astype(np.int64)
    py = np.floor(ym / PARCEL_Y_M).astype(np.int64)
    return {
        "use": hash_unit(px, py, mix_key(seed, "puse")),
        "kind": hash_unit(px, py, mix_key(seed, "pkind")),
    }


def classify(
    h: np.ndarray,
    xm: np.ndarray,
    ym: np.ndarray,
    seed: int,
    relief: Relief,
    sea_level: float,
    pixel_size: float,
    climate: Climate,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Land cover, DTM and DSM for the inner part of h (cropped by LC_HALO on every side).

    Classes follow the scene's climate lines (:mod:`demgen.data.synth.climate`: farm and
    town lines, tree line, rock line, snow line, each wobbling by ``line_noise_m``), slope,
    moisture (noise, low elevation, concavity) and noise; DTM reports the water surface over
    water, like real DEMs. xm, ym are the coordinates of h (shape (1, W) and (H, 1)).
    """
    f = np.float32
    r = LC_HALO
    H, W = h.shape
    ci = (slice(r, H - r), slice(r, W - r))
    hc = h[ci]
    x = xm[:, r : W - r]
    y = ym[r : H - r, :]
    inv2 = f(0.5 / pixel_size)
    gx = (h[r : H - r, r + 1 : W - r + 1] - h[r : H - r, r - 1 : W - r - 1]) * inv2
    gy = (h[r - 1 : H - r - 1, r : W - r] - h[r + 1 : H - r + 1, r : W - r]) * inv2
    slope = np.sqrt(gx * gx + gy * gy)  # tan of slope angle
    lap = (
        h[0 : H - 2 * r, r : W - r]
        + h[2 * r : H, r : W - r]
        + h[r : H - r, 0 : W - 2 * r]
        + h[r : H - r, 2 * r : W]
    ) * f(0.25) - hc  # > 0 in valleys
    above = hc - f(sea_level)
    n_moist = fbm(x, y, 2500.0, 3, mix_key(seed, "moist"))
    n_line = fbm(x, y, 1800.0, 3, mix_key(seed, "lines"))
    n_fine = fbm(x, y, 400.0, 2, mix_key(seed, "fine"))
    lowness = f(1) / (f(1) + np.maximum(above, f(0)) * f(1 / 150.0))
    moisture = n_moist * f(0.6) + lowness * f(0.5) + np.clip(lap * f(0.15), -0.4, 0.6)
    wobble = n_line * f(climate.line_noise_m)  # the lines follow one along-slope noise
    noise = climate.line_noise_m
    tree_line = f(climate.tree_line_m) + wobble
    # snow lies lower in concave ground (avalanche cones, shaded hollows)
    snow_line = (
        f(climate.snow_line_m) + wobble * f(1.2) - np.clip(lap * f(20), -0.6 * noise, 1.2 * noise)
    )

    lc = np.full(hc.shape, GRASS, dtype=np.uint8)
    forest = (moisture + n_fine * f(0.35) > f(0.35)) | ((slope > f(0.35)) & (n_fine > -0.2))
    forest &= hc < tree_line
    lc[forest] = FOREST
    parcels = parcel_fields(x, y, seed)
    ag = (
        (slope < f(0.09))
        & (hc < f(climate.farm_line_m) + wobble)
        & (parcels["use"] < f(0.6))
        & (n_moist > f(-0.35))
        & (moisture < f(0.9))
    )
    lc[ag] = CROP
    high = hc > tree_line
    rock_line = f(climate.rock_line_m) + wobble + n_fine * f(0.8 * noise)
    rocky = high & ((slope > f(0.45)) | (hc > rock_line))
    lc[rocky] = ROCK
    lc[slope > f(0.95)] = ROCK
    snow = (hc > snow_line) & (slope < f(1.1))
    lc[snow] = SNOW
    beach = (above <= f(4) + n_fine * f(3)) & (slope < f(0.08))
    lc[beach] = SAND

    blocks = block_fields(x, y, seed)
    n_town = fbm(blocks["cx"], blocks["cy"], 5000.0, 2, mix_key(seed, "town"))
    urban = (
        (n_town > f(relief.urban))
        & (slope < f(0.13))
        & (above > f(4))
        & (hc < f(climate.town_line_m) + wobble)
        & (moisture < f(0.85))
    )
    lc[urban] = URBAN
    water = hc <= f(sea_level)
    lc[water] = WATER

    dtm = np.where(water, f(sea_level), hc).astype(np.float32)
    bh = blocks["height"]
    b_height = f(6) + f(34) * bh * bh * bh
    building = urban & ~blocks["street"] & (blocks["roof"] > f(0.06))
    crown = hash_unit(
        np.floor(x / pixel_size).astype(np.int64),
        np.floor(y / pixel_size).astype(np.int64),
        mix_key(seed, "crown"),
    )
    canopy = f(8) + f(22) * np.clip(f(0.55) + n_fine * f(0.7) + (crown - f(0.5)) * f(0.35), 0, 1)
    canopy = canopy * np.clip((tree_line - hc) * f(1 / 400.0), 0.45, 1)
    obj = np.where(building, b_height, f(0)) + np.where(lc == FOREST, canopy, f(0))
    dsm = (dtm + obj).astype(np.float32)
    return lc, dtm, dsm
