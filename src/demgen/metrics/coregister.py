"""Horizontal and vertical co-registration of two DEMs (Nuth & Kääb, 2011).

Nuth, C. and Kääb, A. (2011): Co-registration and bias corrections of satellite elevation
data sets for quantifying glacier thickness change, The Cryosphere 5, 271-290.

If the prediction is the reference moved by a horizontal vector s (metres) and raised by
dz, then on a slope alpha facing (downhill) the aspect psi, clockwise from north,

    dh / tan(alpha) = a cos(b - psi) + c,   a = |s|, s_east = a sin(b), s_north = a cos(b)

(the paper's eq. 3; c absorbs dz / tan(alpha)). Writing a cos(b - psi) as
A cos(psi) + B sin(psi) makes the fit linear: (A, B, c) = (s_north, s_east, c) by least
squares. Over stable pixels with a reference slope between ``min_slope_deg`` and
``max_slope_deg``, dh is taken minus its median, y = dh / tan(alpha) is binned by aspect
(5 degree bins, the median of each, as xdem does) and the cosine fitted to the bins. The
prediction is then resampled (bilinear) at x + s and the fit repeated on what is left,
until the step is below ``tolerance_px`` pixels or ``max_iterations`` is reached. The
vertical shift is the median of dh over all stable pixels at the final position.

Conventions: ``dx`` is positive east and ``dy`` positive north, in metres (``*_m``) and in
reference pixels (``*_px``); ``dz`` is positive when the prediction is too high. The
prediction corrected for the shift is ``prediction(x + dx, y + dy) - dz``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from demgen.errors import InputError
from demgen.metrics.dem import NMAD_SCALE, slope_aspect

MIN_PIXELS = 100
MIN_BINS = 6


@dataclass
class Shift:
    """The shift of a prediction relative to its reference (see the module docstring)."""

    dx_m: float
    dy_m: float
    dz_m: float
    dx_px: float
    dy_px: float
    iterations: int
    converged: bool
    n_pixels: int
    nmad_before_m: float
    nmad_after_m: float

    @property
    def cols(self) -> float:
        """The shift in columns (east)."""
        return self.dx_px

    @property
    def rows(self) -> float:
        """The shift in rows (rows go south)."""
        return -self.dy_px

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def shift_bilinear(a: np.ndarray, cols: float, rows: float) -> np.ndarray:
    """``a`` sampled (bilinearly) at (row + rows, col + cols); NaN outside or next to NaN."""
    a = np.asarray(a, np.float64)
    h, w = a.shape
    r0, c0 = math.floor(rows), math.floor(cols)
    fr, fc = rows - r0, cols - c0
    out = np.zeros((h, w))
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            if wr * wc == 0.0:
                continue
            out += wr * wc * _take(a, r0 + dr, c0 + dc)
    return out


def _take(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``a`` moved by whole pixels: out[r, c] = a[r + rows, c + cols], NaN outside."""
    h, w = a.shape
    out = np.full((h, w), np.nan)
    rs, re = max(0, -rows), min(h, h - rows)
    cs, ce = max(0, -cols), min(w, w - cols)
    if rs < re and cs < ce:
        out[rs:re, cs:ce] = a[rs + rows : re + rows, cs + cols : ce + cols]
    return out


def _nmad(x: np.ndarray) -> float:
    return float(NMAD_SCALE * np.median(np.abs(x - np.median(x)))) if x.size else math.nan


def fit_cosine(dh: np.ndarray, tan_slope: np.ndarray, aspect_rad: np.ndarray, bins: int = 72):
    """(s_east, s_north, c) in metres from dh / tan(slope) binned by aspect (see above)."""
    y = dh / tan_slope
    idx = np.minimum((aspect_rad / (2 * np.pi) * bins).astype(np.int64), bins - 1)
    order = np.argsort(idx, kind="stable")
    idx, y, psi = idx[order], y[order], aspect_rad[order]
    edges = np.searchsorted(idx, np.arange(bins + 1))
    rows, ys = [], []
    min_count = max(3, y.size // (bins * 20))
    for k in range(bins):
        lo, hi = edges[k], edges[k + 1]
        if hi - lo >= min_count:
            p = float(np.median(psi[lo:hi]))
            rows.append((math.cos(p), math.sin(p), 1.0))
            ys.append(float(np.median(y[lo:hi])))
    if len(rows) < MIN_BINS:
        raise InputError(
            "co-registration: too few slope directions among the stable pixels "
            f"({len(rows)} of {bins} aspect bins); the terrain is too flat or too small"
        )
    (north, east, c), *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    return float(east), float(north), float(c)


def nuth_kaab(
    pred: np.ndarray | list[np.ndarray],
    ref: np.ndarray | list[np.ndarray],
    pixel_size: tuple[float, float],
    stable: np.ndarray | list[np.ndarray | None] | None = None,
    *,
    min_slope_deg: float = 3.0,
    max_slope_deg: float = 70.0,
    tolerance_px: float = 0.01,
    max_iterations: int = 15,
) -> Shift:
    """The shift of ``pred`` relative to ``ref`` (same grid, metres), Nuth & Kääb (2011).

    ``pred``, ``ref`` and ``stable`` (True = stable terrain to use) may be lists of tiles
    of the same grid (a sample of a large raster); ``pixel_size`` is (x, y) in metres.
    """
    preds = pred if isinstance(pred, list) else [pred]
    refs = ref if isinstance(ref, list) else [ref]
    stables = stable if isinstance(stable, list) else [stable] * len(preds)
    px, py = abs(float(pixel_size[0])), abs(float(pixel_size[1]))
    tiles = []  # per tile: prediction, reference, stable mask, fit mask, tan(slope), aspect
    for p, r, s in zip(preds, refs, stables, strict=True):
        p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
        base = np.isfinite(r) & np.isfinite(p)
        if s is not None:
            base &= np.asarray(s, bool)
        slope, aspect = slope_aspect(np.where(base, r, np.nan), (px, py))
        with np.errstate(invalid="ignore"):
            fit = base & (slope >= min_slope_deg) & (slope <= max_slope_deg)
        tiles.append((p, r, base, fit, np.tan(np.radians(slope)), np.radians(aspect)))
    if sum(int(t[3].sum()) for t in tiles) < MIN_PIXELS:
        raise InputError(
            f"co-registration: fewer than {MIN_PIXELS} stable pixels with a slope of "
            f"{min_slope_deg:g} to {max_slope_deg:g} deg; nothing to fit"
        )

    def differences(cols: float, rows: float, fit_only: bool) -> tuple[np.ndarray, ...]:
        parts = []
        for p, r, base, fit, tan_s, asp in tiles:
            dh = shift_bilinear(p, cols, rows) - r
            sel = (fit if fit_only else base) & np.isfinite(dh)
            parts.append((dh[sel], tan_s[sel], asp[sel]))
        return tuple(np.concatenate(x) for x in zip(*parts, strict=True))

    cols = rows = 0.0
    converged, it = False, 0
    for it in range(1, max_iterations + 1):  # noqa: B007  (it is reported)
        dh, tan_s, asp = differences(cols, rows, fit_only=True)
        if dh.size < MIN_PIXELS:
            raise InputError("co-registration diverged: the shift left too few pixels")
        east, north, _ = fit_cosine(dh - np.median(dh), tan_s, asp)
        step_c, step_r = east / px, -north / py
        cols, rows = cols + step_c, rows + step_r
        if math.hypot(step_c, step_r) < tolerance_px:
            converged = True
            break
    before = differences(0.0, 0.0, fit_only=False)[0]
    after = differences(cols, rows, fit_only=False)[0]
    dz = float(np.median(after))
    return Shift(
        dx_m=cols * px, dy_m=-rows * py, dz_m=dz, dx_px=cols, dy_px=-rows,
        iterations=it, converged=converged, n_pixels=int(after.size),
        nmad_before_m=_nmad(before), nmad_after_m=_nmad(after - dz),
    )  # fmt: skip
