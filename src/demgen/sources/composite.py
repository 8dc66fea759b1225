"""Combining observations: one date from several items, and a median over the dates.

Values here are reflectance x 10000 as float32 with NaN where a pixel is not clear
(cloud, shadow, no data; :mod:`demgen.sources.masks`).

- :func:`mosaic_date`: the items of one date (neighbouring tiles, overlapping orbits),
  ordered by cloud cover, lowest first; each pixel takes the first item clear there. Its
  mask code is 0 where some item is clear, else the code of the first item that has
  data (cloud or shadow), else 3 (no data).
- :func:`median_composite`: the per-pixel median over the dates that are clear at that
  pixel (Sat2DEM's cloud removal by temporal compositing), each band separately, with
  the number of clear dates; NaN where no date is clear. An even number of clear dates
  gives the mean of the two middle values (numpy's median).
- :func:`to_uint16`: reflectance x 10000 rounded to uint16, 0 (nodata) where NaN and
  valid values clipped to [1, 65535]: a reflectance below 0.0001 (negative after the
  Sentinel-2 offset, dark water) is stored as 1, so it never reads as nodata.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from demgen.sources.masks import CLEAR, NODATA

UINT16_NODATA = 0


def mosaic_date(
    values: Sequence[np.ndarray], codes: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """First-clear mosaic of one date's items: ((B, h, w) float32 NaN-masked, (h, w) codes)."""
    out = np.full(values[0].shape, np.nan, np.float32)
    code = np.full(codes[0].shape, NODATA, np.uint8)
    filled = np.zeros(codes[0].shape, bool)
    for v, c in zip(values, codes, strict=True):
        clear = (c == CLEAR) & ~filled & np.all(np.isfinite(v), axis=0)
        out[:, clear] = v[:, clear]
        filled |= clear
        seen = (code == NODATA) & (c != NODATA)
        code[seen] = c[seen]
    code[filled] = CLEAR
    return out, code


def median_composite(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over axis 0 of (T, B, h, w), ignoring NaN; (median, clear count)."""
    count = np.all(np.isfinite(stack), axis=1).sum(axis=0).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        med = np.nanmedian(stack, axis=0).astype(np.float32)
    return med, count


def to_uint16(refl_x1e4: np.ndarray) -> np.ndarray:
    """float reflectance x 10000 -> uint16, 0 where NaN, valid values clipped to [1, 65535]."""
    finite = np.all(np.isfinite(refl_x1e4), axis=0)
    out = np.clip(np.rint(np.nan_to_num(refl_x1e4)), 1, 65535).astype(np.uint16)
    out[:, ~finite] = UINT16_NODATA
    return out
