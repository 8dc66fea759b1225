"""Windowed evaluation: every metric of :mod:`demgen.evaluate` in strips of rows.

Memory is bounded by one strip (``window_rows`` rows plus a halo of ``HALO`` rows on
each side, so that slope, aspect, hillshade and the 11 px SSIM window of every counted
pixel see the same neighbours as in the whole raster) and by the errors themselves,
kept as float32 (4 bytes per valid pixel) for the two order statistics, NMAD and LE90.

Two passes read the rasters: the first counts the valid pixels (the size of the error
store) and finds the reference's height range (SSIM's and PSNR's data range); the
second accumulates the sums, the errors, the per-class statistics and a decimated copy
for the figure (at most ``figure_side`` pixels a side, block means of valid pixels).
The result equals the whole-array metrics (tested: float64 sums to rounding, NMAD and
LE90 exactly).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demgen.errors import InputError
from demgen.evaluation_grid import OnGrid, RefGrid
from demgen.metrics.coregister import Shift, nuth_kaab
from demgen.metrics.dem import ErrorAccumulator, TerrainAccumulator, psnr_db, valid_pixels
from demgen.metrics.ssim import RADIUS, ssim_sums
from demgen.viz.hillshade import hillshade

HALO = RADIUS + 3  # SSIM's window radius, + 1 for the hillshade's gradient, + margin
WINDOW_ROWS = 256
FIGURE_SIDE = 1024
COREG_MAX_SIDE = 3072  # co-registration fits on at most this many pixels squared
COREG_TILE = 1024  # ... as tiles of this size spread over a larger raster
NO_CLASS = np.iinfo(np.uint16).max


@dataclass
class Inputs:
    """The readers of one evaluation: prediction, reference, and optional mask/classes."""

    grid: RefGrid
    pred: OnGrid
    ref: OnGrid
    mask: OnGrid | None = None
    landcover: OnGrid | None = None

    def valid(self, row0: int, nrows: int, col0: int = 0, ncols: int | None = None):
        """(prediction, reference, valid) for a window of the reference grid."""
        p = self.pred.read(row0, nrows, col0, ncols)
        r = self.ref.read(row0, nrows, col0, ncols)
        keep = None
        if self.mask is not None:
            m = self.mask.read(row0, nrows, col0, ncols)
            keep = np.isfinite(m) & (m != 0)
        return p, r, valid_pixels(p, r, keep)


def strips(height: int, rows: int, halo: int = 0) -> Iterator[tuple[int, int, int, int]]:
    """(read_start, read_stop, core_start, core_stop) row ranges covering ``height``."""
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        yield max(0, r0 - halo), min(height, r1 + halo), r0, r1


@dataclass
class Decimated:
    """Block means (of valid pixels) of two rasters, ``factor`` x ``factor`` pixels each."""

    height: int
    width: int
    side: int = FIGURE_SIDE
    factor: int = field(init=False)

    def __post_init__(self) -> None:
        self.factor = max(1, math.ceil(max(self.height, self.width) / self.side))
        k = self.factor
        shape = (math.ceil(self.height / k), math.ceil(self.width / k))
        self._sum = np.zeros((2, *shape))
        self._count = np.zeros((2, *shape), np.int32)

    def add(self, row0: int, *arrays: np.ndarray) -> None:
        """Add rows starting at ``row0`` (NaN = not shown) of each raster."""
        k = self.factor
        rows = row0 + np.arange(arrays[0].shape[0])
        pad = self._sum.shape[2] * k - self.width
        for i, a in enumerate(arrays):
            a = np.pad(a, ((0, 0), (0, pad)), constant_values=np.nan)
            a = a.reshape(a.shape[0], -1, k)
            ok = np.isfinite(a)
            sums, counts = np.where(ok, a, 0.0).sum(axis=2), ok.sum(axis=2)
            for b in np.unique(rows // k):
                sel = rows // k == b
                self._sum[i, b] += sums[sel].sum(axis=0)
                self._count[i, b] += counts[sel].sum(axis=0)

    def arrays(self) -> tuple[np.ndarray, ...]:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self._sum / self._count
        return tuple(np.where(self._count > 0, means, np.nan))


class _Classes:
    """Land-cover values of the valid pixels, as uint16 codes beside the error store."""

    def __init__(self, capacity: int):
        self.codes = np.empty(capacity, np.uint16)
        self.values: dict[float, int] = {}
        self.stats: dict[int, ErrorAccumulator] = {}

    def add(self, pos: int, lc: np.ndarray, e: np.ndarray, r: np.ndarray) -> None:
        finite = np.isfinite(lc)
        uniq, inv = np.unique(np.where(finite, lc, 0.0), return_inverse=True)
        table = np.empty(uniq.size, np.uint16)
        for j, v in enumerate(uniq.tolist()):
            if v not in self.values:
                if len(self.values) >= NO_CLASS:
                    raise InputError(f"land cover: more than {NO_CLASS - 1} classes")
                self.values[v] = len(self.values)
            table[j] = self.values[v]
        codes = np.where(finite, table[inv.reshape(-1)], NO_CLASS).astype(np.uint16)
        self.codes[pos : pos + codes.size] = codes
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
        for seg in np.split(order, bounds):
            if seg.size and codes[seg[0]] != NO_CLASS:
                acc = self.stats.setdefault(int(codes[seg[0]]), ErrorAccumulator(keep_errors=False))
                acc.add_values(e[seg], r[seg])

    def finish(self, errors: np.ndarray, names: dict[str, str]) -> dict[str, dict[str, float]]:
        """error_stats per class, by class value (``errors``: the store, in pixel order)."""
        out = {}
        for value, code in sorted(self.values.items()):
            if code in self.stats:
                key = str(int(value))
                out[names.get(key, key)] = self.stats[code].finish(errors, self.codes, code)
        return out


def evaluate_windows(
    inputs: Inputs,
    *,
    window_rows: int = WINDOW_ROWS,
    figure: bool = False,
    class_names: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Decimated | None]:
    """All metrics over the pixels valid in prediction, reference and mask, by strips."""
    grid = inputs.grid
    window_rows = max(1, int(window_rows))
    n, lo, hi = 0, math.inf, -math.inf
    for a, b, _, _ in strips(grid.height, window_rows):
        _, r, ok = inputs.valid(a, b - a)
        if ok.any():
            n += int(ok.sum())
            lo, hi = min(lo, float(r[ok].min())), max(hi, float(r[ok].max()))
    if n == 0:
        raise InputError(f"{inputs.pred.path}: no pixel is valid in both it and {inputs.ref.path}")
    rng = max(hi - lo, 1e-6)

    errs = ErrorAccumulator(capacity=n)
    terrain = TerrainAccumulator()
    ssim = np.zeros(2)  # sum, count
    hs_ssim = np.zeros(2)
    classes = _Classes(n) if inputs.landcover is not None else None
    dec = Decimated(grid.height, grid.width) if figure else None
    for a, b, r0, r1 in strips(grid.height, window_rows, HALO):
        p, r, ok = inputs.valid(a, b - a)
        core = slice(r0 - a, r1 - a)
        okc = ok[core]
        pos = errs.n
        rv = r[core][okc]
        e = p[core][okc] - rv
        errs.add_values(e, rv)
        if classes is not None:
            classes.add(pos, inputs.landcover.read(r0, r1 - r0)[okc], e, rv)
        del rv, e
        sizes = grid.row_pixel_sizes(a, b - a)
        terrain.add(p, r, ok, sizes, core)
        ssim += ssim_sums(p, r, ok, rng, core)
        hs_p = hillshade(np.where(ok, p, np.nan), sizes)
        hs_r = hillshade(np.where(ok, r, np.nan), sizes)
        hs_ok = ok & np.isfinite(hs_p) & np.isfinite(hs_r)
        hs_ssim += ssim_sums(hs_p, hs_r, hs_ok, 1.0, core)
        del hs_p, hs_r, hs_ok
        if dec is not None:
            dec.add(r0, np.where(okc, p[core], np.nan), np.where(okc, r[core], np.nan))

    result: dict[str, Any] = {}
    if classes is not None:
        result["per_class"] = classes.finish(errs.errors(), class_names or {})
    stats = errs.finish() | terrain.finish()
    stats["ssim"] = ssim[0] / ssim[1] if ssim[1] else math.nan
    stats["psnr_db"] = psnr_db(rng, errs.sum_sq / errs.n)
    stats["hillshade_ssim"] = hs_ssim[0] / hs_ssim[1] if hs_ssim[1] else math.nan
    stats["height_range_m"] = [lo, hi]
    return stats | result, dec


def coregistration_windows(grid: RefGrid) -> list[tuple[int, int, int, int]]:
    """(row0, col0, nrows, ncols) windows to fit the shift on: the whole grid when it is
    at most ``COREG_MAX_SIDE`` squared, else a 3 x 3 spread of ``COREG_TILE`` tiles."""
    h, w = grid.shape
    if h * w <= COREG_MAX_SIDE**2:
        return [(0, 0, h, w)]
    k = COREG_MAX_SIDE // COREG_TILE
    th, tw = min(h, COREG_TILE), min(w, COREG_TILE)
    rows = np.linspace(0, h - th, k).round().astype(int)
    cols = np.linspace(0, w - tw, k).round().astype(int)
    return [(int(r), int(c), th, tw) for r in rows for c in cols]


def estimate_shift(inputs: Inputs, **options: Any) -> Shift:
    """Nuth & Kääb's shift of the prediction over the (masked) valid pixels."""
    preds, refs, stables = [], [], []
    for row0, col0, nrows, ncols in coregistration_windows(inputs.grid):
        p, r, ok = inputs.valid(row0, nrows, col0, ncols)
        preds.append(p)  # unmasked: the shifted prediction may use pixels next to the mask
        refs.append(r)
        stables.append(ok)
    return nuth_kaab(preds, refs, inputs.grid.pixel_size_m, stables, **options)
