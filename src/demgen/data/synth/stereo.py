"""Stereo-like refinement inputs for a synthetic scene: an erroneous initial DSM, a second ortho
and a triangulation-error layer (what DeepDEM / ResDepth refine from).

Written from the finished scene rasters (dtm.tif, dsm.tif, landcover.tif) in one windowed,
tiled pass: every tile is read with a halo (edge-replicated at scene borders) wide enough for
the blurs, slopes and parallax shifts, and all randomness is hashed from global pixel
coordinates, so tiled output is bit-identical to untiled output and memory depends on the
tile, not the scene. The error model (all magnitudes are :class:`StereoConfig` fields):

- small objects are smoothed: ``initial = dtm' + blur(dsm - dtm)`` (buildings and tree crowns
  lose their edges and part of their height, as dense matching does at ~1 GSD windows), the
  terrain itself lightly blurred too;
- matching noise, spatially correlated, whose standard deviation grows with slope:
  ``std = noise_m + noise_slope_m * tan(slope)`` (stereo height error grows with terrain
  slope; e.g. Hobi & Ginzler 2012, Sensors 12(5), on WorldView-2 / Cartosat stereo DSMs);
- sparse blunders: blobs of a few pixels whose height is off by tens of metres (up or down);
- holes (nodata = -9999): water and snow (no texture), steep slopes, self-shadowed slopes and
  random low-texture patches, where a matcher finds no reliable correspondence;
- ``ortho2.tif``: the scene rendered again under a second sun (azimuth / elevation) and seen
  off-nadir: above-ground objects shift by ``(dsm - dtm) * tan(view angle)`` along the view
  azimuth (relief displacement left after orthorectification on the DTM);
- ``triangulation_error.tif`` (metres): a per-pixel error estimate correlated with the actual
  error (a fraction of |initial - dsm| times a random factor, plus the expected noise std),
  set to ``hole_error_m`` in holes;
- ``ndvi.tif`` (optional): (B8 - B4) / (B8 + B4) of image.tif.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from demgen.data.synth.config import SYNTH_VERTICAL_CRS, SceneConfig
from demgen.data.synth.noise import fbm, hash_unit, mix_key
from demgen.data.synth.render import render_tile, shadow_steps
from demgen.data.synth.terrain import SNOW, WATER
from demgen.data.synth.tiling import normals_block, read_padded, scene_tiles, tile_coords
from demgen.io.raster import NODATA, geotiff_profile, open_writer

STEREO_FILES: tuple[str, ...] = ("initial_dsm.tif", "ortho2.tif", "triangulation_error.tif")


@dataclass
class StereoConfig:
    """Error model of the synthetic stereo DSM and the second view (see the module docstring)."""

    object_blur_px: float = 2.0  # Gaussian sigma applied to above-ground objects
    terrain_blur_px: float = 0.7  # Gaussian sigma applied to the terrain
    noise_m: float = 0.5  # matching noise std on flat ground, metres
    noise_slope_m: float = 6.0  # extra std per unit tan(slope), metres
    noise_corr_px: float = 1.0  # Gaussian sigma correlating the noise
    blunder_rate: float = 0.002  # blunder centres per pixel
    blunder_m: tuple[float, float] = (15.0, 60.0)  # blunder magnitude range, metres
    blunder_radius_px: int = 2
    hole_slope: float = 1.0  # tan(slope) above which matching fails (45 degrees)
    hole_dark: float = 0.08  # cos of sun incidence below which a slope is too dark to match
    hole_patch: float = 0.8  # fbm threshold for random low-texture holes (higher = fewer)
    hole_error_m: float = 50.0  # triangulation error reported in holes
    sun_azimuth_offset: float = 70.0  # second ortho's sun azimuth = scene's + this
    sun_elevation2: float = 55.0
    view_angle_deg: float = 20.0  # off-nadir angle of the second view
    view_azimuth: float = 90.0  # direction objects lean in the second ortho (east)
    ndvi: bool = True


def _gauss_kernel(sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.ones(1, np.float32)
    r = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' convolution: output shrinks by len(k) - 1 on both axes.

    Sums run over kernel taps in a fixed order with element-wise ops only, so every output
    pixel is computed identically whatever tile it belongs to.
    """
    n = len(k)
    if n == 1:
        return a.astype(np.float32, copy=True)
    H, W = a.shape
    rows = np.zeros((H - n + 1, W), np.float32)
    for i in range(n):
        rows += k[i] * a[i : i + H - n + 1]
    out = np.zeros((H - n + 1, W - n + 1), np.float32)
    for i in range(n):
        out += k[i] * rows[:, i : i + W - n + 1]
    return out


def _read_edge(ds: Any, band: int | list[int], r0: int, c0: int, h: int, w: int, halo: int,
               size: int) -> np.ndarray:  # fmt: skip
    """Window grown by ``halo`` on every side, edge-replicated outside the scene."""
    ra, rb = max(0, r0 - halo), min(size, r0 + h + halo)
    ca, cb = max(0, c0 - halo), min(size, c0 + w + halo)
    data = ds.read(band, window=Window(ca, ra, cb - ca, rb - ra))
    pads = [(ra - (r0 - halo), (r0 + h + halo) - rb), (ca - (c0 - halo), (c0 + w + halo) - cb)]
    if data.ndim == 3:
        pads = [(0, 0), *pads]
    return np.pad(data, pads, mode="edge")


def _gaussian(gcol: np.ndarray, grow: np.ndarray, key: int) -> np.ndarray:
    """Standard normal per global pixel (Box-Muller on two hashed uniforms)."""
    u1 = hash_unit(gcol, grow, mix_key(key, 1)) + np.float32(2.0**-25)
    u2 = hash_unit(gcol, grow, mix_key(key, 2))
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(np.float32(2 * math.pi) * u2)).astype(np.float32)


def _slope(z: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dz/dx east, dz/dy north, tan slope) of the interior of z (shrinks by 1 on each side)."""
    inv2 = np.float32(0.5 / px)
    gx = (z[1:-1, 2:] - z[1:-1, :-2]) * inv2
    gy = (z[:-2, 1:-1] - z[2:, 1:-1]) * inv2
    return gx, gy, np.sqrt(gx * gx + gy * gy)


def stereo_tile(
    dsm: np.ndarray,
    dtm: np.ndarray,
    lc: np.ndarray,
    halo: int,
    gcol: np.ndarray,
    grow: np.ndarray,
    xm: np.ndarray,
    ym: np.ndarray,
    *,
    seed: int,
    pixel_size: float,
    sun_azimuth: float,
    sun_elevation: float,
    cfg: StereoConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(initial DSM with NODATA holes, triangulation error) of the tile inside a ``halo``.

    dsm, dtm are (h + 2 halo, w + 2 halo); lc, gcol/grow and xm/ym cover the tile only.
    """
    f = np.float32
    h, w = lc.shape
    ko, kt, kn = (_gauss_kernel(s) for s in (cfg.object_blur_px, cfg.terrain_blur_px,
                                             cfg.noise_corr_px))  # fmt: skip

    def crop(a: np.ndarray, m: int) -> np.ndarray:
        """Centre of a (h + 2m, w + 2m) array."""
        return a[m : m + h, m : m + w]

    # smoothed surface on the tile plus a 1-px rim (for slopes)
    ro, rt = len(ko) // 2, len(kt) // 2
    obj = _blur(crop_rim(dsm - dtm, halo, h, w, ro + 1), ko)
    ter = _blur(crop_rim(dtm, halo, h, w, rt + 1), kt)
    smooth = ter + obj  # (h + 2, w + 2)
    gx, gy, tan_s = _slope(smooth, pixel_size)
    std = f(cfg.noise_m) + f(cfg.noise_slope_m) * tan_s

    # correlated unit noise (renormalized to unit variance after the blur)
    rn = len(kn) // 2
    gc = np.arange(gcol[0, 0] - rn, gcol[0, -1] + rn + 1, dtype=np.int64)[None, :]
    gr = np.arange(grow[0, 0] - rn, grow[-1, 0] + rn + 1, dtype=np.int64)[:, None]
    white = _gaussian(gc, gr, mix_key(seed, "stereo-noise"))
    # a separable blur scales the variance by (sum k^2)^2, so divide by sum k^2
    noise = _blur(white, kn) * f(1.0 / float(np.sum(kn.astype(np.float64) ** 2)))

    # blunders: hashed centres, each spread over a small disc with one signed amplitude
    rb = int(cfg.blunder_radius_px)
    gc = np.arange(gcol[0, 0] - rb, gcol[0, -1] + rb + 1, dtype=np.int64)[None, :]
    gr = np.arange(grow[0, 0] - rb, grow[-1, 0] + rb + 1, dtype=np.int64)[:, None]
    is_c = hash_unit(gc, gr, mix_key(seed, "blunder")) < f(cfg.blunder_rate)
    mag = hash_unit(gc, gr, mix_key(seed, "blunder-m"))
    lo, hi = cfg.blunder_m
    amp = np.where(is_c, f(lo) + (f(hi) - f(lo)) * mag, f(0))
    amp = np.where(hash_unit(gc, gr, mix_key(seed, "blunder-s")) < f(0.5), -amp, amp)
    blunder = np.zeros((h, w), np.float32)
    for dr in range(-rb, rb + 1):
        for dc in range(-rb, rb + 1):
            if dr * dr + dc * dc <= rb * rb:
                sl = amp[rb + dr : rb + dr + h, rb + dc : rb + dc + w]
                blunder = np.where(sl != 0, sl, blunder)

    initial = crop(smooth, 1) + std * noise + blunder

    # holes: no texture (water, snow), too steep, too dark, random low-texture patches
    sx = math.sin(math.radians(sun_azimuth)) * math.cos(math.radians(sun_elevation))
    sy = math.cos(math.radians(sun_azimuth)) * math.cos(math.radians(sun_elevation))
    sz = math.sin(math.radians(sun_elevation))
    cos_i = (f(sz) - gx * f(sx) - gy * f(sy)) / np.sqrt(f(1) + tan_s * tan_s)
    patch = fbm(xm, ym, 40.0 * pixel_size, 2, mix_key(seed, "stereo-holes"))
    hole = (
        (lc == WATER)
        | (lc == SNOW)
        | (tan_s > f(cfg.hole_slope))
        | (cos_i < f(cfg.hole_dark))
        | (patch > f(cfg.hole_patch) * f(0.5))
    )

    # triangulation error: correlated with the actual error, never equal to it
    err = np.abs(initial - crop(dsm, halo))
    factor = f(0.5) + hash_unit(gcol, grow, mix_key(seed, "tri"))
    tri = f(0.5) * std + f(0.7) * err * factor
    tri = np.where(hole, f(cfg.hole_error_m), tri).astype(np.float32)
    initial = np.where(hole, f(NODATA), initial).astype(np.float32)
    return initial, tri


def crop_rim(a: np.ndarray, halo: int, h: int, w: int, m: int) -> np.ndarray:
    """The tile grown by ``m`` pixels from an array holding it inside ``halo`` pixels."""
    return a[halo - m : halo + h + m, halo - m : halo + w + m]


def parallax_shift(img: np.ndarray, shift: np.ndarray, m: int) -> np.ndarray:
    """Sample (C, h + 2m, w + 2m) ``img`` at column ``c - shift`` of each tile pixel (linear).

    ``shift`` (h, w) is in pixels, |shift| <= m; objects appear displaced by +shift columns.
    """
    c, H, W = img.shape
    h, w = shift.shape
    neg = -np.clip(shift, -m, m).astype(np.float32)
    whole = np.floor(neg)
    t = (neg - whole).astype(np.float32)  # from the shift alone: identical in every tile
    c0 = np.clip(np.arange(w)[None, :] + m + whole.astype(np.int64), 0, W - 2)
    rows = np.arange(h)[:, None] + m
    out = np.empty((c, h, w), np.float32)
    for b in range(c):
        a = img[b].astype(np.float32)
        out[b] = a[rows, c0] * (1 - t) + a[rows, c0 + 1] * t
    return out


def write_stereo(
    scene_dir: Path,
    cfg: SceneConfig,
    stereo: StereoConfig | None = None,
    *,
    dsm_max: float | None = None,
) -> list[str]:
    """Write the stereo layers into ``scene_dir`` (which holds the finished scene rasters).

    ``cfg`` is the resolved :class:`~demgen.data.synth.config.SceneConfig`; ``dsm_max`` the
    scene's highest DSM value (read from dsm.tif when not given). Returns the file names.
    """
    st = stereo or StereoConfig()
    d = Path(scene_dir)
    size, px = cfg.size, cfg.pixel_size
    ko = len(_gauss_kernel(st.object_blur_px)) // 2
    kt = len(_gauss_kernel(st.terrain_blur_px)) // 2
    halo = max(ko, kt) + 1
    shift_max = max(1, int(math.ceil(60.0 * math.tan(math.radians(st.view_angle_deg)) / px)) + 1)
    az2 = (cfg.sun_azimuth + st.sun_azimuth_offset) % 360.0
    el2 = st.sun_elevation2
    tanv = math.tan(math.radians(st.view_angle_deg))
    vx = math.sin(math.radians(st.view_azimuth))  # column direction of the lean (east +)
    with rasterio.open(d / "dsm.tif") as r_dsm:
        transform, crs = r_dsm.transform, r_dsm.crs
        if dsm_max is None:
            dsm_max = max(float(r_dsm.read(1, window=w).max()) for _, w in r_dsm.block_windows(1))

    def prof(count: int, dtype: str, nodata: float | None = None) -> dict[str, Any]:
        p = geotiff_profile(
            width=size, height=size, count=count, dtype=dtype, crs=crs, transform=transform
        )
        if nodata is not None:
            p["nodata"] = nodata
        return p

    files = list(STEREO_FILES) + (["ndvi.tif"] if st.ndvi else [])
    with contextlib.ExitStack() as stack:
        r_dsm = stack.enter_context(rasterio.open(d / "dsm.tif"))
        r_dtm = stack.enter_context(rasterio.open(d / "dtm.tif"))
        r_lc = stack.enter_context(rasterio.open(d / "landcover.tif"))
        r_img = stack.enter_context(rasterio.open(d / "image.tif"))
        w_init = stack.enter_context(open_writer(
            d / "initial_dsm.tif", prof(1, "float32", NODATA), descriptions=["initial_dsm"],
            units=["metre"], vertical_crs=SYNTH_VERTICAL_CRS))  # fmt: skip
        w_tri = stack.enter_context(open_writer(
            d / "triangulation_error.tif", prof(1, "float32"),
            descriptions=["triangulation_error"], units=["metre"]))  # fmt: skip
        w_o2 = stack.enter_context(open_writer(
            d / "ortho2.tif", prof(4, "uint16"), descriptions=list(r_img.descriptions),
            units=["reflectance x 10000"] * 4, tags=r_img.tags()))  # fmt: skip
        w_ndvi = (
            stack.enter_context(
                open_writer(d / "ndvi.tif", prof(1, "float32"), descriptions=["ndvi"])
            )  # fmt: skip
            if st.ndvi
            else None
        )
        for r0, c0, th, tw in scene_tiles(size, cfg.tile):
            win = Window(c0, r0, tw, th)
            dsm = _read_edge(r_dsm, 1, r0, c0, th, tw, halo, size).astype(np.float32)
            dtm = _read_edge(r_dtm, 1, r0, c0, th, tw, halo, size).astype(np.float32)
            lc = r_lc.read(1, window=win)
            xm, ym, gcol, grow = tile_coords(cfg, r0, c0, th, tw)
            init, tri = stereo_tile(
                dsm, dtm, lc, halo, gcol, grow, xm, ym, seed=cfg.seed, pixel_size=px,
                sun_azimuth=cfg.sun_azimuth, sun_elevation=cfg.sun_elevation, cfg=st,
            )  # fmt: skip
            w_init.write(init, 1, window=win)
            w_tri.write(tri, 1, window=win)

            # second ortho: render a grown window under the second sun, then shift objects
            m = shift_max
            ra, rb = max(0, r0 - m), min(size, r0 + th + m)
            ca, cb = max(0, c0 - m), min(size, c0 + tw + m)
            gh, gw = rb - ra, cb - ca
            gwin = Window(ca, ra, gw, gh)
            tile_min = float(r_dsm.read(1, window=gwin).min())
            steps = shadow_steps(az2, el2, px, cfg.max_shadow_px, dsm_max - tile_min)
            top = max([1] + [-dr for dr, _, _ in steps])
            bottom = max([1] + [dr for dr, _, _ in steps])
            left = max([1] + [-dc for _, dc, _ in steps])
            right = max([1] + [dc for _, dc, _ in steps])
            dsm_pad = read_padded(r_dsm, ra, ca, gh, gw, (top, bottom, left, right), size,
                                   -np.inf)  # fmt: skip
            nblk = normals_block(dsm_pad, top, left, ra, ca, gh, gw, size)
            gxm, gym, ggc, ggr = tile_coords(cfg, ra, ca, gh, gw)
            img2, _ = render_tile(
                dsm_pad, top, left, r_dtm.read(1, window=gwin), r_lc.read(1, window=gwin),
                gxm, gym, ggc, ggr, seed=cfg.seed, pixel_size=px, sun_azimuth=az2,
                sun_elevation=el2, haze=cfg.haze, cloud_cover=0.0, steps=steps,
                normals_dsm=nblk,
            )  # fmt: skip
            full = np.pad(img2, [(0, 0), (ra - (r0 - m), r0 + th + m - rb),
                                 (ca - (c0 - m), c0 + tw + m - cb)], mode="edge")  # fmt: skip
            above = crop_rim(dsm - dtm, halo, th, tw, 0)
            shift = above * np.float32(tanv * vx / px)
            o2 = parallax_shift(full, shift, m)
            w_o2.write(np.clip(np.rint(o2), 1, 65535).astype(np.uint16), window=win)
            if w_ndvi is not None:
                img = r_img.read(window=win).astype(np.float32)
                red, nir = img[2], img[3]
                ndvi = (nir - red) / np.maximum(nir + red, np.float32(1))
                w_ndvi.write(ndvi.astype(np.float32), 1, window=win)
    return files
