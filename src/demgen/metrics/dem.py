"""DEM accuracy in metres over valid pixels, the way geodesists report it.

With e = prediction - reference over pixels valid in both:
bias = mean(e); MAE = mean(|e|); RMSE = sqrt(mean(e^2));
NMAD = 1.4826 * median(|e - median(e)|) (Höhle & Höhle, 2009, ISPRS J.);
LE90 = 90th percentile of |e|; R2 = 1 - sum(e^2) / sum((ref - mean(ref))^2).
Terrain derivatives (slope, aspect) and image similarity (SSIM, PSNR) follow below.

Every statistic is built from an accumulator that takes the pixels in any number of
pieces (the windows of a large raster) and gives the same result as one whole array:
sums are float64, and the two order statistics (NMAD, LE90) are taken exactly from the
errors kept as float32 (4 bytes per valid pixel) by a radix selection in chunks (no
sorted copy, no scratch array, and no dependence on the order the pieces came in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from math import nan

import numpy as np

from demgen.metrics.ssim import (
    masked_ssim,  # noqa: F401  (re-exported: the SSIM itself lives in demgen.metrics.ssim)
    ssim_sums,
)

NMAD_SCALE = 1.4826


def valid_pixels(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of pixels finite in both arrays and true in ``mask``."""
    ok = np.isfinite(pred) & np.isfinite(ref)
    if mask is not None:
        ok &= mask.astype(bool)
    return ok


_CHUNK = 1 << 22  # values per chunk of the order-statistic passes
_SIGN = np.uint32(0x80000000)


def _keys(x: np.ndarray) -> np.ndarray:
    """uint32 keys that sort like the float32 values ``x`` (the IEEE bits, sign-folded)."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return np.where(b & _SIGN, ~b, b | _SIGN)


def _value(key: int) -> float:
    bits = key ^ 0x80000000 if key & 0x80000000 else ~key & 0xFFFFFFFF
    return float(np.array([bits], np.uint32).view(np.float32)[0])


def select_float32(chunks: Callable[[], Iterator[np.ndarray]], ks: list[int]) -> list[float]:
    """The ``ks``-th smallest (0-based) of the float32 values ``chunks()`` yields, exactly.

    A two-pass radix selection on the values' bits (high 16, then low 16 within the high
    bin): no copy, no sort, and the answer does not depend on the values' order.
    """
    hist = np.zeros(1 << 16, np.int64)
    for c in chunks():
        hist += np.bincount(_keys(c) >> 16, minlength=1 << 16)
    cum = np.cumsum(hist)
    tops = [int(np.searchsorted(cum, k, side="right")) for k in ks]
    lows = {t: np.zeros(1 << 16, np.int64) for t in set(tops)}
    for c in chunks():
        key = _keys(c)
        high = key >> 16
        for t, low in lows.items():
            low += np.bincount(key[high == t] & 0xFFFF, minlength=1 << 16)
    out = []
    for k, t in zip(ks, tops, strict=True):
        below = int(cum[t - 1]) if t else 0
        low = int(np.searchsorted(np.cumsum(lows[t]), k - below, side="right"))
        out.append(_value((t << 16) | low))
    return out


def quantile_float32(chunks: Callable[[], Iterator[np.ndarray]], n: int, q: float) -> float:
    """The ``q`` quantile (numpy's default linear interpolation) of ``n`` float32 values."""
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    v_lo, v_hi = select_float32(chunks, [lo, hi])
    return v_lo + (pos - lo) * (v_hi - v_lo)


def nmad_le90(
    errors: np.ndarray, codes: np.ndarray | None = None, code: int | None = None
) -> tuple[float, float]:
    """(NMAD, LE90) of float32 ``errors`` (those where ``codes == code`` when given),
    exactly, in chunks: memory beyond ``errors`` stays a few chunks, whatever its size."""

    def chunks(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[], Iterator[np.ndarray]]:
        def gen() -> Iterator[np.ndarray]:
            for i in range(0, errors.size, _CHUNK):
                c = errors[i : i + _CHUNK]
                yield f(c if codes is None else c[codes[i : i + _CHUNK] == code])

        return gen

    n = errors.size if codes is None else int(np.count_nonzero(codes == code))
    med = quantile_float32(chunks(lambda c: c), n, 0.5)
    le90 = quantile_float32(chunks(np.abs), n, 0.9)
    dev = chunks(lambda c: np.abs(c.astype(np.float64) - med).astype(np.float32))
    return NMAD_SCALE * quantile_float32(dev, n, 0.5), le90


class ErrorAccumulator:
    """Bias, MAE, RMSE, NMAD, LE90 and R2 over pixels added in pieces.

    ``capacity`` preallocates the float32 error store (the number of valid pixels, when
    known); ``keep_errors=False`` keeps only the sums (no NMAD/LE90 unless given errors).
    """

    def __init__(self, capacity: int | None = None, *, keep_errors: bool = True):
        self.n = 0
        self.sum_e = self.sum_abs = self.sum_sq = 0.0
        self.ref_mean = self.ref_m2 = 0.0  # Chan et al.'s pairwise mean / sum of squares
        self._keep = keep_errors
        self._buf = np.empty(capacity, np.float32) if capacity is not None else None
        self._chunks: list[np.ndarray] = []

    def add(self, pred: np.ndarray, ref: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """Add the pixels of ``ok``; returns their errors (float64, in ``ok``'s order)."""
        r = ref[ok].astype(np.float64)
        e = pred[ok].astype(np.float64) - r
        self.add_values(e, r)
        return e

    def add_values(self, e: np.ndarray, r: np.ndarray) -> None:
        """Add errors ``e`` and the reference heights ``r`` they were measured at."""
        nb = e.size
        if nb == 0:
            return
        self.sum_e += float(e.sum())
        self.sum_abs += float(np.abs(e).sum())
        self.sum_sq += float(np.dot(e, e))
        mean_b = float(r.mean())
        m2_b = float(np.sum((r - mean_b) ** 2))
        na, n = self.n, self.n + nb
        delta = mean_b - self.ref_mean
        self.ref_mean += delta * nb / n
        self.ref_m2 += m2_b + delta * delta * na * nb / n
        if self._keep:
            if self._buf is not None and n > self._buf.size:  # more than announced: grow
                self._chunks, self._buf = [self._buf[:na].copy()], None
            if self._buf is not None:
                self._buf[na:n] = e
            else:
                self._chunks.append(e.astype(np.float32))
        self.n = n

    def errors(self) -> np.ndarray:
        """The float32 errors added so far (a view of the store, not a copy, when preallocated)."""
        if self._buf is not None:
            return self._buf[: self.n]
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks else np.empty(0, "f4")]
        return self._chunks[0]

    def finish(
        self, errors: np.ndarray | None = None, codes: np.ndarray | None = None, code: int = 0
    ) -> dict[str, float]:
        """The statistics; NMAD/LE90 from the store, or from ``errors`` (where
        ``codes == code`` when given: one class of a shared store)."""
        if self.n == 0:
            raise ValueError("no pixel is valid in both prediction and reference")
        if errors is None and not self._keep:
            raise ValueError("errors were not kept: pass them to finish()")
        nmad, le90 = nmad_le90(self.errors() if errors is None else errors, codes, code)
        return {
            "bias_m": self.sum_e / self.n,
            "mae_m": self.sum_abs / self.n,
            "rmse_m": float(np.sqrt(self.sum_sq / self.n)),
            "nmad_m": nmad,
            "le90_m": le90,
            "r2": 1.0 - self.sum_sq / self.ref_m2 if self.ref_m2 > 0 else nan,
            "n_pixels": self.n,
        }


def error_stats(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Bias, MAE, RMSE, NMAD, LE90 (metres), R2 and the pixel count, over valid pixels."""
    acc = ErrorAccumulator()
    acc.add(pred, ref, valid_pixels(pred, ref, mask))
    return acc.finish()


def gradient_east_north(
    dem: np.ndarray, pixel_size: tuple[float | np.ndarray, float | np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(dz/dx east, dz/dy north) by central differences, for a pixel size in metres.

    ``pixel_size`` is (x, y): scalars, or per-row arrays of shape (H, 1) for a geographic
    grid, whose x size shrinks with cos(latitude) from row to row.
    """
    px, py = pixel_size
    z = np.asarray(dem, np.float64)
    if np.isscalar(px) and np.isscalar(py):
        dz_drow, dz_dcol = np.gradient(z, abs(float(py)), abs(float(px)))
    else:
        dz_drow, dz_dcol = np.gradient(z)
        dz_drow /= np.abs(py)
        dz_dcol /= np.abs(px)
    np.negative(dz_drow, out=dz_drow)  # rows go south
    return dz_dcol, dz_drow


def slope_aspect(dem: np.ndarray, pixel_size: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Slope and aspect in degrees from central differences with the true pixel size (metres).

    Aspect is the downhill direction clockwise from north (0 = north-facing, 90 = east).
    Pixels next to NaN get NaN.
    """
    dz_dx, dz_dnorth = gradient_east_north(dem, pixel_size)
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dnorth)))
    aspect = np.degrees(np.arctan2(-dz_dx, -dz_dnorth)) % 360.0
    return slope, aspect


class TerrainAccumulator:
    """Slope RMSE and mean slopes over valid pixels, aspect MAE (circular) where the
    reference slope exceeds ``min_slope_deg`` (aspect is undefined on flat ground)."""

    def __init__(self, min_slope_deg: float = 5.0):
        self.min_slope_deg = min_slope_deg
        self.n = self.n_aspect = 0
        self.sum_d2 = self.sum_ref = self.sum_pred = self.sum_da = 0.0

    def add(self, pred, ref, ok, pixel_size, core: slice = slice(None)) -> None:
        """Add rows ``core`` of a strip (derivatives use the rows around them)."""
        s_p, a_p = (x[core] for x in slope_aspect(np.where(ok, pred, np.nan), pixel_size))
        s_r, a_r = (x[core] for x in slope_aspect(np.where(ok, ref, np.nan), pixel_size))
        good = np.isfinite(s_p) & np.isfinite(s_r)
        sp, sr = s_p[good], s_r[good]
        self.n += sp.size
        self.sum_d2 += float(np.sum((sp - sr) ** 2))
        self.sum_ref += float(sr.sum())
        self.sum_pred += float(sp.sum())
        steep = good & (s_r > self.min_slope_deg)
        da = np.abs(a_p[steep] - a_r[steep]) % 360.0
        self.sum_da += float(np.minimum(da, 360.0 - da).sum())
        self.n_aspect += da.size

    def finish(self) -> dict[str, float]:
        n, na = self.n, self.n_aspect
        return {
            "slope_rmse_deg": float(np.sqrt(self.sum_d2 / n)) if n else nan,
            "slope_mean_ref_deg": self.sum_ref / n if n else nan,
            "slope_mean_pred_deg": self.sum_pred / n if n else nan,
            "aspect_mae_deg": self.sum_da / na if na else nan,
            "aspect_pixels": na,
        }


def terrain_stats(
    pred: np.ndarray,
    ref: np.ndarray,
    pixel_size: tuple[float, float],
    mask: np.ndarray | None = None,
    min_slope_deg: float = 5.0,
) -> dict[str, float]:
    """Slope RMSE and mean slopes (deg) over valid pixels; aspect MAE (deg, circular) where
    the reference slope exceeds ``min_slope_deg``, since aspect is undefined on flat ground."""
    acc = TerrainAccumulator(min_slope_deg)
    acc.add(pred, ref, valid_pixels(pred, ref, mask), pixel_size)
    return acc.finish()


def psnr_db(data_range: float, mse: float) -> float:
    """PSNR = 10 log10(range^2 / MSE) in dB; +inf for identical rasters."""
    return float(10 * np.log10(max(data_range, 1e-6) ** 2 / mse)) if mse > 0 else float("inf")


def height_range(ref: np.ndarray, ok: np.ndarray) -> float:
    """The data range SSIM and PSNR use: the reference's max - min over valid pixels."""
    return max(float(ref[ok].max()) - float(ref[ok].min()), 1e-6)


def image_stats(pred: np.ndarray, ref: np.ndarray, ok: np.ndarray) -> dict[str, float]:
    """SSIM and PSNR (dB) on the reference's height range L over valid pixels:
    PSNR = 10 log10(L^2 / MSE); SSIM with the scalar range L (nothing clipped)."""
    rng = height_range(ref, ok)
    mse = float(np.mean((pred[ok] - ref[ok]) ** 2))
    total, count = ssim_sums(pred, ref, ok, rng)
    return {"ssim": total / count if count else nan, "psnr_db": psnr_db(rng, mse)}
