"""DEM accuracy in metres over valid pixels, the way geodesists report it.

With e = prediction - reference over pixels valid in both:
bias = mean(e); MAE = mean(|e|); RMSE = sqrt(mean(e^2));
NMAD = 1.4826 * median(|e - median(e)|) (Höhle & Höhle, 2009, ISPRS J.);
LE90 = 90th percentile of |e|; R2 = 1 - sum(e^2) / sum((ref - mean(ref))^2).
"""

from __future__ import annotations

import numpy as np


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
