"""Robust outlier filters for gridded lidar that remove lone noise returns but keep summits.

Lidar noise that escapes classification is mostly *isolated* returns: birds, haze and
multipath echoes tens of metres above or below the surface, one return where the surface
has many. A real summit is different: its cell holds several returns near the top, and
its neighbours slope up to it, so the cells around it are within a slope's rise of it.

**DSM: the isolated-return rules.** The highest first return ``z1`` of a cell is a *high*
outlier when it is more than ``T`` metres above every other return that could support it:
its own cell's second-highest return and the highest returns of the 8 neighbouring cells.
It is replaced by the cell's second-highest return when that one is within ``T`` of (or
below) the neighbours, otherwise the cell becomes nodata. It is a *low* outlier when it
lies more than ``T`` below the lowest ground cell of its 3 x 3 neighbourhood (after the DTM
filter below): nothing is seen below the ground, while a return through a canopy gap is
at the ground and stays (a rule against the neighbours' returns would delete such gaps).
A lone return with nothing around is not contradicted and stays.

**DTM: a trimmed mean checked against the neighbours' median.** A ground cell's value is
the mean of its ground returns. With ``ref`` the median of the 8 neighbours' means (needs
at least 3), a cell's lowest (highest) ground return more than ``T`` below (above) ``ref``
is taken out of the mean (one per side, exactly, from the stored sum, minimum and
maximum), and a cell whose mean is still more than ``T`` from ``ref`` is dropped and left to
the gap filling (:mod:`demgen.pointcloud.fill`).

**Threshold.** ``T = max(5 m, 2 x cell size)``: between two adjacent cells a surface of
slope ``s`` rises ``cell x tan(s)`` (``x sqrt(2)`` diagonally), so ``2 x cell`` keeps every
slope below 63 degrees (54 degrees diagonally) -- steeper natural terrain is rare at lidar
resolutions, and walls and roof edges have in-cell support anyway -- while the 5 m floor
keeps fine grids from cutting tree crowns. Noise classes 7 and 18 are dropped before all
this (:mod:`demgen.pointcloud.grid`); this filter is the safety net for unclassified noise.
Two noise returns within ``T`` of each other in adjacent cells support each other and stay:
the rules remove isolated returns, not clusters.
"""

from __future__ import annotations

import numpy as np

MIN_THRESHOLD_M = 5.0
THRESHOLD_CELLS = 2.0
MIN_NEIGHBOURS = 3  # neighbour means needed before a DTM cell is judged
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_BLOCK_ROWS = 512  # rows per block of the DTM median (8 neighbour planes per block)


def default_threshold(cell_m: float) -> float:
    """``max(5 m, 2 x cell size)`` (see the module docstring for why)."""
    return max(MIN_THRESHOLD_M, THRESHOLD_CELLS * float(cell_m))


def _padded(a: np.ndarray) -> np.ndarray:
    p = np.full((a.shape[0] + 2, a.shape[1] + 2), np.nan, dtype=np.float32)
    p[1:-1, 1:-1] = a
    return p


def _shift(p: np.ndarray, dy: int, dx: int, r0: int = 0, r1: int | None = None) -> np.ndarray:
    """Rows r0:r1 of the neighbour at offset (dy, dx) from a NaN-padded array."""
    h, w = p.shape[0] - 2, p.shape[1] - 2
    r1 = h if r1 is None else r1
    return p[1 + dy + r0 : 1 + dy + r1, 1 + dx : 1 + dx + w]


def filter_dsm(
    top1: np.ndarray, top2: np.ndarray, threshold: float, ground: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The DSM (NaN where no return) after the isolated-return rules, and the outlier mask.

    ``top1``/``top2``: (H, W) highest and second-highest first return, -inf when absent.
    ``ground``: the filtered ground-cell means (NaN where none) for the low rule.
    """
    z1 = np.where(np.isfinite(top1), top1, np.nan).astype(np.float32)
    z2 = np.where(np.isfinite(top2), top2, np.nan).astype(np.float32)
    p = _padded(z1)
    nb_max = np.full(z1.shape, np.nan, dtype=np.float32)
    for dy, dx in _OFFSETS:
        nb_max = np.fmax(nb_max, _shift(p, dy, dx))
    support = np.fmax(nb_max, z2)  # the highest other return around: own second, neighbours
    high = z1 - support > threshold  # False where either is NaN
    low = np.zeros(z1.shape, dtype=bool)
    if ground is not None:
        pg = _padded(ground.astype(np.float32))
        lowest = ground.astype(np.float32).copy()
        for dy, dx in _OFFSETS:
            lowest = np.fmin(lowest, _shift(pg, dy, dx))
        low = lowest - z1 > threshold
    outlier = high | low
    replace = high & (z2 - nb_max <= threshold)  # the second return has support around it
    if ground is not None:
        replace &= ~(lowest - z2 > threshold)
    dsm = z1.copy()
    dsm[outlier] = np.where(replace[outlier], z2[outlier], np.nan)
    return dsm, outlier


def _median_of_neighbours(p: np.ndarray, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    """(median of the finite 8-neighbour values, how many are finite) for rows r0:r1."""
    stack = np.stack([_shift(p, dy, dx, r0, r1) for dy, dx in _OFFSETS])
    k = np.isfinite(stack).sum(axis=0)
    stack.sort(axis=0)  # NaN sorts last
    lo = np.take_along_axis(stack, np.maximum((k - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(stack, np.maximum(k // 2, 0)[None], axis=0)[0]
    med = np.where(k > 0, 0.5 * (lo + hi), np.nan).astype(np.float32)
    return med, k


def filter_dtm(
    gsum: np.ndarray,
    gcount: np.ndarray,
    gmin: np.ndarray,
    gmax: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, dict[str, int]]:
    """Ground-cell means (NaN where none) after trimming and dropping (module docstring).

    Returns the (H, W) float32 array and counts: ``trimmed`` points taken out of a cell's
    mean and ``dropped`` cells.
    """
    count = gcount.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, gsum / count, np.nan).astype(np.float32)
    p = _padded(mean)
    out = np.empty_like(mean)
    trimmed = dropped = 0
    for r0 in range(0, mean.shape[0], _BLOCK_ROWS):
        r1 = min(r0 + _BLOCK_ROWS, mean.shape[0])
        ref, k = _median_of_neighbours(p, r0, r1)
        judged = (k >= MIN_NEIGHBOURS) & (count[r0:r1] > 0)
        s = gsum[r0:r1].copy()
        c = count[r0:r1].copy()
        lo = judged & (c > 1) & (gmin[r0:r1] < ref - threshold)
        s[lo] -= gmin[r0:r1][lo]
        c[lo] -= 1
        hi = judged & (c > 1) & (gmax[r0:r1] > ref + threshold)
        s[hi] -= gmax[r0:r1][hi]
        c[hi] -= 1
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(c > 0, s / c, np.nan).astype(np.float32)
        bad = judged & ~(np.abs(m - ref) <= threshold)
        m[bad] = np.nan
        out[r0:r1] = m
        trimmed += int(lo.sum() + hi.sum())
        dropped += int(bad.sum())
    return out, {"trimmed": trimmed, "dropped": dropped}
