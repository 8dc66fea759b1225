"""Image-quality metrics of a predicted image against a reference, over valid pixels only.

Inputs are float arrays (bands, H, W) (a 2D array is one band) and an optional boolean
``valid`` mask (H, W). A pixel counts only where ``valid`` is True and every band of both
images is finite; invalid pixels never change a metric, whatever values they hold (they
are zeroed before any filter, and SSIM windows that touch them are excluded).

The data range L is explicit, a scalar, and nothing is clipped into it:

* reflectance in 0..1: ``L = 1.0`` (:data:`REFLECTANCE_RANGE`);
* reflectance scaled to uint16 x 10000: ``L = 10000`` (:data:`SCALED_REFLECTANCE_RANGE`);
* heights in metres: the reference's range, ``L = reference_range(ref, valid)``, passed
  explicitly.

L matters: SSIM's stabilisers are C1 = (0.01 L)^2 and C2 = (0.03 L)^2, so a range far
larger than the data (255 or 10000 on reflectance in 0..1) makes C2 dwarf the local
variances and SSIM tends to 1 for *any* two images (an earlier SSIM gave 0.996 to two
unrelated images that way). PSNR shifts by 20 log10 of the range ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import nan

import numpy as np

from demgen.metrics.ssim import K1, K2, WINDOW, gaussian_filter, masked_ssim, near_invalid

REFLECTANCE_RANGE = 1.0
SCALED_REFLECTANCE_RANGE = 10000.0
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli, Bovik 2003


def _prepare(
    pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bands, H, W) float64 copies of both images with invalid pixels zeroed, and the
    (H, W) mask of counted pixels (``valid`` and finite in every band of both)."""
    p = np.asarray(pred, np.float64)
    r = np.asarray(ref, np.float64)
    if p.ndim == 2:
        p = p[None]
    if r.ndim == 2:
        r = r[None]
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(f"pred {p.shape} and ref {r.shape} must be equal (bands, H, W)")
    ok = np.isfinite(p).all(axis=0) & np.isfinite(r).all(axis=0)
    if valid is not None:
        v = np.asarray(valid, bool)
        if v.shape != ok.shape:
            raise ValueError(f"valid {v.shape} must be (H, W) = {ok.shape}")
        ok &= v
    return np.where(ok, p, 0.0), np.where(ok, r, 0.0), ok


def reference_range(ref: np.ndarray, valid: np.ndarray | None = None) -> float:
    """max - min of the reference over valid pixels (all bands): the range for metres."""
    _, r, ok = _prepare(ref, ref, valid)
    if not ok.any():
        return nan
    vals = r[:, ok]
    return float(vals.max() - vals.min())


def psnr_from_mse(mse: float, data_range: float) -> float:
    """PSNR = 10 log10(L^2 / MSE) dB; ``inf`` for MSE 0, NaN without pixels."""
    if math.isnan(mse):
        return nan
    return math.inf if mse == 0 else float(10.0 * math.log10(data_range**2 / mse))


def psnr(pred: np.ndarray, ref: np.ndarray, valid=None, *, data_range: float) -> float:
    """Overall PSNR (dB): the MSE pooled over every band and valid pixel."""
    p, r, ok = _prepare(pred, ref, valid)
    mse = float(np.mean((p[:, ok] - r[:, ok]) ** 2)) if ok.any() else nan
    return psnr_from_mse(mse, data_range)


def ssim(pred: np.ndarray, ref: np.ndarray, valid=None, *, data_range: float) -> float:
    """Mean over bands of the masked SSIM (Wang et al. 2004) of each band.

    SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 +
    sigma_y^2 + C2)), 11 px Gaussian window (sigma 1.5), averaged over valid pixels whose
    whole window is valid (:func:`demgen.metrics.ssim.masked_ssim`).
    """
    p, r, ok = _prepare(pred, ref, valid)
    return float(np.mean([masked_ssim(p[b], r[b], ok, data_range) for b in range(len(p))]))


def ms_ssim_min_size(scales: int = len(MS_SSIM_BETAS)) -> int:
    """Least image side for ``scales`` scales: the coarsest must hold one 11 px window
    (176 px for the standard 5 scales, the size torchmetrics also requires)."""
    return WINDOW * 2 ** (scales - 1)


def _pool2(a: np.ndarray) -> np.ndarray:
    """2 x 2 average pooling, odd last row/column dropped (as ``avg_pool2d``)."""
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    return a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _ms_ssim_band(
    x: np.ndarray, y: np.ndarray, ok: np.ndarray, data_range: float, betas: Sequence[float]
) -> float | None:
    """Masked MS-SSIM of one band (x, y already zeroed where not ``ok``)."""
    if min(x.shape) < ms_ssim_min_size(len(betas)):
        return None
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    total = 1.0
    for j, beta in enumerate(betas):
        mu_x, mu_y = gaussian_filter(x), gaussian_filter(y)
        var_x = np.maximum(gaussian_filter(x * x) - mu_x**2, 0.0)
        var_y = np.maximum(gaussian_filter(y * y) - mu_y**2, 0.0)
        cs = (2 * (gaussian_filter(x * y) - mu_x * mu_y) + c2) / (var_x + var_y + c2)
        keep = ok & ~near_invalid(ok)
        if not keep.any():
            return nan
        if j == len(betas) - 1:  # the coarsest scale contributes full SSIM (l * cs)
            cs = cs * (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
        total *= max(float(cs[keep].mean()), 0.0) ** beta
        x, y = _pool2(x), _pool2(y)
        ok = _pool2(ok.astype(np.float64)) == 1.0  # a coarse pixel is valid if all 4 are
        x, y = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    return float(total)


def ms_ssim(
    pred: np.ndarray,
    ref: np.ndarray,
    valid=None,
    *,
    data_range: float,
    betas: Sequence[float] = MS_SSIM_BETAS,
) -> float | None:
    """Mean over bands of the masked multi-scale SSIM (Wang, Simoncelli, Bovik 2003).

    MS-SSIM = prod_{j<M} cs_j^beta_j * ssim_M^beta_M, cs_j the mean contrast-structure
    term at scale j (2 x 2 average pooling between scales), the standard 5 weights by
    default. Each scale's mean is clamped at 0 before the power (torchmetrics'
    ``normalize="relu"``) so anti-correlated images give 0, not NaN. A coarse pixel is
    valid only if its 4 parents are. Returns None when the image is smaller than
    :func:`ms_ssim_min_size` (176 px for 5 scales): the coarsest scale would not hold a
    window, and silently using fewer scales would change the metric. Pass a shorter
    ``betas`` (e.g. ``MS_SSIM_BETAS[:3]``, 44 px) to choose fewer scales explicitly.
    """
    p, r, ok = _prepare(pred, ref, valid)
    vals = [_ms_ssim_band(p[b], r[b], ok, data_range, betas) for b in range(len(p))]
    return None if vals[0] is None else float(np.mean(vals))


def _spectral_angles_deg(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per-pixel angle (degrees) between the spectra p[:, i] and r[:, i] (bands, N)."""
    dot = (p * r).sum(axis=0)
    norm = np.sqrt((p * p).sum(axis=0) * (r * r).sum(axis=0))
    both_zero = ((p == 0).all(axis=0)) & ((r == 0).all(axis=0))
    cos = np.where(norm > 0, dot / np.where(norm > 0, norm, 1.0), np.where(both_zero, 1.0, 0.0))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def sam_deg(pred: np.ndarray, ref: np.ndarray, valid=None) -> float:
    """Spectral Angle Mapper (Kruse et al. 1993): mean over valid pixels of
    arccos(<p, r> / (|p| |r|)), in degrees. Two zero spectra are 0 deg apart, a zero
    spectrum and a non-zero one 90 deg. NaN for one band (no spectrum) or no pixel."""
    p, r, ok = _prepare(pred, ref, valid)
    if len(p) < 2 or not ok.any():
        return nan
    return float(_spectral_angles_deg(p[:, ok], r[:, ok]).mean())


def ergas(pred: np.ndarray, ref: np.ndarray, valid=None, *, resolution_ratio: float = 1.0) -> float:
    """ERGAS (Wald 2000): 100 (h / l) sqrt(mean_b(RMSE_b^2 / mu_b^2)).

    RMSE_b is band b's RMSE and mu_b the reference band's mean, over valid pixels; h / l
    the ratio of the output's pixel size to the input's (1/4 for 4x pansharpening) and 1
    for same-resolution synthesis (the default). Meant for positive quantities
    (reflectance, radiance): a band with mean 0 gives inf. Lower is better, 0 is perfect.
    """
    p, r, ok = _prepare(pred, ref, valid)
    if not ok.any():
        return nan
    rmse = np.sqrt(np.mean((p[:, ok] - r[:, ok]) ** 2, axis=1))
    mu = np.mean(r[:, ok], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(rmse == 0, 0.0, rmse**2 / mu**2)
    return float(100.0 * resolution_ratio * np.sqrt(np.mean(rel)))


def image_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    data_range: float,
    band_names: Sequence[str] | None = None,
    resolution_ratio: float = 1.0,
    ms_ssim_betas: Sequence[float] = MS_SSIM_BETAS,
) -> dict:
    """Every image metric, overall and per band, as plain Python values.

    Keys: ``psnr_db`` (pooled MSE; inf for identical images, null in JSON via
    :mod:`demgen.io.jsonio`), ``ssim`` and ``ms_ssim`` (means of the bands' values;
    ``ms_ssim`` is None with ``ms_ssim_note`` when the image is too small), ``sam_deg``
    (None for one band), ``ergas``, ``rmse``, ``mae``, ``valid_px``, ``data_range``,
    ``resolution_ratio`` and ``per_band``: ``{name: {psnr_db, ssim, ms_ssim, rmse, mae,
    ergas}}``, the band's ERGAS being 100 (h / l) RMSE_b / |mu_b|. Band names default to
    ``B1``, ``B2``, ...
    """
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise ValueError(f"data_range must be a positive scalar, got {data_range!r}")
    L = float(data_range)
    p, r, ok = _prepare(pred, ref, valid)
    names = list(band_names) if band_names is not None else [f"B{i + 1}" for i in range(len(p))]
    if len(names) != len(p):
        raise ValueError(f"{len(names)} band names for {len(p)} bands")
    n = int(ok.sum())
    err = p[:, ok] - r[:, ok]
    per_band: dict[str, dict] = {}
    ssims, mss = [], []
    for b, name in enumerate(names):
        mse_b = float(np.mean(err[b] ** 2)) if n else nan
        mu_b = float(np.mean(r[b, ok])) if n else nan
        s = masked_ssim(p[b], r[b], ok, L)
        m = _ms_ssim_band(p[b], r[b], ok, L, ms_ssim_betas)
        ssims.append(s)
        mss.append(m)
        if mse_b == 0 or math.isnan(mse_b):
            e_b = mse_b
        else:
            e_b = 100.0 * resolution_ratio * math.sqrt(mse_b) / abs(mu_b) if mu_b else math.inf
        per_band[name] = {
            "psnr_db": psnr_from_mse(mse_b, L),
            "ssim": float(s),
            "ms_ssim": m,
            "rmse": math.sqrt(mse_b),
            "mae": float(np.mean(np.abs(err[b]))) if n else nan,
            "ergas": float(e_b),
        }
    out = {
        "psnr_db": psnr_from_mse(float(np.mean(err**2)) if n else nan, L),
        "ssim": float(np.mean(ssims)),
        "ms_ssim": None if mss[0] is None else float(np.mean(mss)),
        "sam_deg": float(_spectral_angles_deg(p[:, ok], r[:, ok]).mean())
        if len(p) > 1 and n
        else None,
        "ergas": ergas(p, r, ok, resolution_ratio=resolution_ratio),
        "rmse": math.sqrt(float(np.mean(err**2))) if n else nan,
        "mae": float(np.mean(np.abs(err))) if n else nan,
        "valid_px": n,
        "data_range": L,
        "resolution_ratio": float(resolution_ratio),
        "per_band": per_band,
    }
    if out["ms_ssim"] is None:
        size = ms_ssim_min_size(len(ms_ssim_betas))
        out["ms_ssim_note"] = (
            f"image {p.shape[1]}x{p.shape[2]} px is smaller than {size} px, the least side "
            f"for {len(ms_ssim_betas)} MS-SSIM scales"
        )
    return out
