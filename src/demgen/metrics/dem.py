"""DEM accuracy in metres over valid pixels, the way geodesists report it.

With e = prediction - reference over pixels valid in both:
bias = mean(e); MAE = mean(|e|); RMSE = sqrt(mean(e^2));
NMAD = 1.4826 * median(|e - median(e)|) (Höhle & Höhle, 2009, ISPRS J.);
LE90 = 90th percentile of |e|; R2 = 1 - sum(e^2) / sum((ref - mean(ref))^2).
Terrain derivatives (slope, aspect) and image similarity (SSIM, PSNR) follow below.
"""

from __future__ import annotations

from math import nan

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def valid_pixels(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of pixels finite in both arrays and true in ``mask``."""
    ok = np.isfinite(pred) & np.isfinite(ref)
    if mask is not None:
        ok &= mask.astype(bool)
    return ok


def error_stats(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Bias, MAE, RMSE, NMAD, LE90 (metres), R2 and the pixel count, over valid pixels."""
    ok = valid_pixels(pred, ref, mask)
    n = int(ok.sum())
    if n == 0:
        raise ValueError("no pixel is valid in both prediction and reference")
    p = pred[ok].astype(np.float64)
    r = ref[ok].astype(np.float64)
    e = p - r
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    return {
        "bias_m": float(e.mean()),
        "mae_m": float(np.abs(e).mean()),
        "rmse_m": float(np.sqrt(np.mean(e**2))),
        "nmad_m": float(1.4826 * np.median(np.abs(e - np.median(e)))),
        "le90_m": float(np.percentile(np.abs(e), 90)),
        "r2": float(1.0 - np.sum(e**2) / ss_tot) if ss_tot > 0 else float("nan"),
        "n_pixels": n,
    }


def slope_aspect(dem: np.ndarray, pixel_size: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Slope and aspect in degrees from central differences with the true pixel size (metres).

    Aspect is the downhill direction clockwise from north (0 = north-facing, 90 = east).
    Pixels next to NaN get NaN.
    """
    px, py = abs(pixel_size[0]), abs(pixel_size[1])
    dz_drow, dz_dcol = np.gradient(np.asarray(dem, np.float64), py, px)
    dz_dx, dz_dnorth = dz_dcol, -dz_drow
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dnorth)))
    aspect = np.degrees(np.arctan2(-dz_dx, -dz_dnorth)) % 360.0
    return slope, aspect


def terrain_stats(
    pred: np.ndarray,
    ref: np.ndarray,
    pixel_size: tuple[float, float],
    mask: np.ndarray | None = None,
    min_slope_deg: float = 5.0,
) -> dict[str, float]:
    """Slope RMSE (deg) over valid pixels; aspect MAE (deg, circular) where the reference
    slope exceeds ``min_slope_deg``, since aspect is undefined on flat ground."""
    s_p, a_p = slope_aspect(np.where(valid_pixels(pred, ref, mask), pred, np.nan), pixel_size)
    s_r, a_r = slope_aspect(np.where(valid_pixels(pred, ref, mask), ref, np.nan), pixel_size)
    ok = np.isfinite(s_p) & np.isfinite(s_r)
    steep = ok & (s_r > min_slope_deg)
    da = np.abs(a_p[steep] - a_r[steep]) % 360.0
    da = np.minimum(da, 360.0 - da)
    return {
        "slope_rmse_deg": float(np.sqrt(np.mean((s_p[ok] - s_r[ok]) ** 2))) if ok.any() else nan,
        "aspect_mae_deg": float(da.mean()) if da.size else nan,
        "aspect_pixels": int(steep.sum()),
    }


def masked_ssim(
    pred: np.ndarray, ref: np.ndarray, ok: np.ndarray, data_range: tuple[float, float]
) -> float:
    """Mean SSIM (Wang et al., 2004, 11 px Gaussian window) over pixels whose whole window is
    valid; invalid pixels are filled identically in both images before filtering."""
    lo, hi = data_range
    fill = 0.5 * (lo + hi)
    p = torch.from_numpy(np.where(ok, pred, fill).astype(np.float32))[None, None]
    r = torch.from_numpy(np.where(ok, ref, fill).astype(np.float32))[None, None]
    _, full = structural_similarity_index_measure(p, r, data_range=(lo, hi), return_full_image=True)
    bad = torch.from_numpy(~ok).float()[None, None]
    near_bad = torch.nn.functional.max_pool2d(bad, 11, stride=1, padding=5)[0, 0].numpy() > 0
    keep = ok & ~near_bad
    if not keep.any():
        return nan
    return float(full[0, 0].numpy()[keep].mean())


def image_stats(pred: np.ndarray, ref: np.ndarray, ok: np.ndarray) -> dict[str, float]:
    """SSIM and PSNR (dB) on the reference's height range over valid pixels:
    PSNR = 10 log10(range^2 / MSE)."""
    lo, hi = float(ref[ok].min()), float(ref[ok].max())
    rng = max(hi - lo, 1e-6)
    mse = float(np.mean((pred[ok] - ref[ok]) ** 2))
    return {
        "ssim": masked_ssim(pred, ref, ok, (lo, hi)),
        "psnr_db": float(10 * np.log10(rng**2 / mse)) if mse > 0 else float("inf"),
    }
