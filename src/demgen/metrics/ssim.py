"""Structural similarity (Wang et al., 2004, IEEE TIP 13(4)) of two rasters over valid pixels.

With mu, sigma^2 and sigma_xy the Gaussian-weighted local means, variances and covariance
(11 x 11 window, sigma 1.5 px, the paper's and torchmetrics' defaults) and
C1 = (0.01 L)^2, C2 = (0.03 L)^2 for a data range L:

    SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2)
           / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))

L is a *scalar* range: nothing is clipped into it, so a prediction that overshoots the
reference's range is scored as it is. Image borders are reflected (as torchmetrics does);
a pixel counts only when its whole window is valid. Computed in float64 with a separable
filter, row block by row block, so a strip of any size gives the same per-pixel values
as the whole image (what windowed evaluation relies on).
"""

from __future__ import annotations

from math import nan

import numpy as np

WINDOW = 11
SIGMA = 1.5
RADIUS = WINDOW // 2
K1, K2 = 0.01, 0.03
_ROW_BLOCK = 32  # rows filtered at a time: keeps the working set in the CPU cache


def gaussian_taps(window: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """The normalised 1D Gaussian window (torchmetrics' ``_gaussian``)."""
    d = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return g / g.sum()


def gaussian_filter(a: np.ndarray, taps: np.ndarray | None = None) -> np.ndarray:
    """``a`` (H, W) filtered by the separable Gaussian with reflected borders (float64)."""
    g = gaussian_taps() if taps is None else taps
    r = len(g) // 2
    h, w = a.shape
    p = np.pad(np.asarray(a, np.float64), r, mode="reflect")
    out = np.empty((h, w))
    tmp = np.empty((_ROW_BLOCK + 2 * r, w))
    for r0 in range(0, h, _ROW_BLOCK):
        n = min(h, r0 + _ROW_BLOCK) - r0
        blk = p[r0 : r0 + n + 2 * r]
        t = tmp[: n + 2 * r]
        np.multiply(blk[:, r : r + w], g[r], out=t)
        for k in range(r):  # the window is symmetric: pair taps k and 2r - k
            t += g[k] * (blk[:, k : k + w] + blk[:, 2 * r - k : 2 * r - k + w])
        o = out[r0 : r0 + n]
        np.multiply(t[r : r + n], g[r], out=o)
        for k in range(r):
            o += g[k] * (t[k : k + n] + t[2 * r - k : 2 * r - k + n])
    return out


def ssim_map(pred: np.ndarray, ref: np.ndarray, data_range: float) -> np.ndarray:
    """Per-pixel SSIM of two finite (H, W) arrays for the scalar ``data_range``."""
    x = np.asarray(pred, np.float64)
    y = np.asarray(ref, np.float64)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    mu_x, mu_y = gaussian_filter(x), gaussian_filter(y)
    var_x = np.maximum(gaussian_filter(x * x) - mu_x**2, 0.0)
    var_y = np.maximum(gaussian_filter(y * y) - mu_y**2, 0.0)
    cov = gaussian_filter(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def near_invalid(ok: np.ndarray, radius: int = RADIUS) -> np.ndarray:
    """True where a (2 radius + 1)^2 window around the pixel holds an invalid pixel
    (pixels beyond the image border do not count, they are reflections)."""
    bad = (~ok).astype(np.int32)
    c = np.pad(bad, ((radius + 1, radius), (0, 0))).cumsum(axis=0)
    rows = c[2 * radius + 1 :] - c[: -2 * radius - 1]
    c = np.pad(rows, ((0, 0), (radius + 1, radius))).cumsum(axis=1)
    return (c[:, 2 * radius + 1 :] - c[:, : -2 * radius - 1]) > 0


def ssim_sums(
    pred: np.ndarray,
    ref: np.ndarray,
    ok: np.ndarray,
    data_range: float,
    core: slice = slice(None),
) -> tuple[float, int]:
    """Sum and count of SSIM over pixels of rows ``core`` whose whole window is valid.

    Invalid pixels are set to 0 in both images (a counted pixel's window never reaches
    them). Callers pass strips with at least ``RADIUS`` rows of halo around ``core``.
    """
    smap = ssim_map(np.where(ok, pred, 0.0), np.where(ok, ref, 0.0), data_range)[core]
    keep = (ok & ~near_invalid(ok))[core]
    return float(smap[keep].sum()), int(keep.sum())


def masked_ssim(pred: np.ndarray, ref: np.ndarray, ok: np.ndarray, data_range: float) -> float:
    """Mean SSIM over valid pixels whose whole 11 px window is valid (NaN when none is).

    ``data_range`` is the scalar L (e.g. the reference's max - min): no value is clipped.
    """
    if isinstance(data_range, tuple):  # (lo, hi) is accepted, and means hi - lo
        data_range = data_range[1] - data_range[0]
    total, count = ssim_sums(pred, ref, ok, float(data_range))
    return total / count if count else nan
