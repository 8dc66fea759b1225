"""Blending of overlapping predicted windows, and the anchoring of relative models.

Windows overlap and are blended with a smooth (Hann) weight, so no seams appear at window
borders; one strip of rows, one window tall, is held at a time. A pixel is nodata
(:data:`NODATA`) in the output exactly where its input was invalid (no dilation), and
never NaN: a value that is not finite after blending is written as nodata too.

Relative models (per-chip normalizations) predict heights up to an unknown offset per
window. With a coarse reference DEM (:class:`_Reference`) each window's offset makes its
mean equal the reference's over the pixels valid in *both* the window's prediction and the
reference; without one (or where the reference has no value under the window), the offset
makes the window agree with the windows already blended where they overlap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.io import DatasetReader
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from demgen.errors import InputError
from demgen.io.raster import NODATA, open_raster, require_crs

__all__ = ["NODATA", "blend_weight", "window_starts"]  # NODATA: demgen.io.raster's, re-exported


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with windows of ``window`` every ``stride``.

    The last window is moved back to end exactly at ``length``.
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def blend_weight(n: int, floor: float = 1e-3) -> np.ndarray:
    """A separable 2D Hann weight of size n x n, floored so edge pixels still count."""
    w = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2
    w = np.maximum(w, floor)
    return np.outer(w, w).astype(np.float32)


def as_stored(values: np.ndarray, bad: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """Output values (C, h, w) as a layer of ``dtype`` is written: unsigned integers like
    the training images (rounded, clipped to ``[1, max]``, nodata 0), else float32 with
    :data:`NODATA`; nodata wherever ``bad`` (h, w). A new array."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        out = np.clip(np.rint(values), 1, np.iinfo(dtype).max)
        out[:, bad] = 0
        return out.astype(dtype)
    out = np.array(values, np.float32)
    out[:, bad] = NODATA
    return out


class _Reference:
    """A coarse DEM read on each window's grid, to anchor relative predictions."""

    def __init__(self, path: str | Path, dst: DatasetReader) -> None:
        self.path = Path(path)
        self.dst_crs = dst.crs
        with open_raster(self.path) as ds:
            require_crs(ds, self.path)
            self.data = ds.read(1).astype(np.float32)
            if ds.nodata is not None:
                self.data[self.data == ds.nodata] = np.nan
            self.data[ds.read_masks(1) == 0] = np.nan
            self.crs, self.transform = ds.crs, ds.transform

    def window(self, transform, shape: tuple[int, int]) -> np.ndarray:
        """The reference heights (metres) on a window's grid, NaN where it has none."""
        out = np.full(shape, np.nan, np.float32)
        reproject(
            self.data, out, src_transform=self.transform, src_crs=self.crs, src_nodata=np.nan,
            dst_transform=transform, dst_crs=self.dst_crs, dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )  # fmt: skip
        return out


class _Blender:
    """Weighted sums of overlapping windows of one output layer over one strip of rows,
    flushed when final. ``channels`` value bands, then as many TTA std bands with ``tta``;
    ``relative`` windows are offset (on their first channel) before blending."""

    def __init__(self, grid, dst, win, channels, relative, ref, tta=False,
                 dtype: str = "float32") -> None:  # fmt: skip
        self.grid, self.dst, self.win = grid, dst, win
        self.dtype = np.dtype(dtype)
        self.channels, self.tta = channels, tta
        self.relative, self.ref = relative, ref
        self.weight = blend_weight(win)
        W = grid.width
        n_out = channels * (2 if tta else 1)
        self.acc = np.zeros((n_out, win, W), np.float64)  # values, then TTA std
        self.wsum = np.zeros((win, W), np.float64)
        self.bad = np.zeros((win, W), bool)
        self.top = 0  # scene row of the strip's first row
        self.n_valid = 0  # valid pixels written so far (0 at the end: nothing to predict)

    def start_row(self, r: int) -> None:
        """Move the strip down so it starts at scene row ``r`` (rows above are written)."""
        shift = r - self.top
        if shift:
            self.acc = np.roll(self.acc, -shift, axis=1)
            self.wsum = np.roll(self.wsum, -shift, axis=0)
            self.bad = np.roll(self.bad, -shift, axis=0)
            self.acc[:, -shift:], self.wsum[-shift:], self.bad[-shift:] = 0, 0, False
            self.top = r

    def windows(self, r: int, cols: list[int]) -> list[Window]:
        """The windows at scene row ``r`` and columns ``cols`` (clipped to the scene)."""
        H, W, win = self.grid.height, self.grid.width, self.win
        return [Window(c, r, min(win, W - c), min(win, H - r)) for c in cols]

    def add(self, r: int, cols: list[int], outs: list) -> None:
        """Blend the predicted windows (readers' ``_Window``) at row ``r``, columns ``cols``."""
        H, win, c_n = self.grid.height, self.win, self.channels
        h = min(win, H - r)
        rr = r - self.top
        for c, out in zip(cols, outs, strict=True):
            w = out.values.shape[-1]
            values = out.values
            if self.relative:
                values = values + self._offset(values[0], ~out.invalid, r, c)
            wt = self.weight[:h, :w]
            self.acc[:c_n, rr : rr + h, c : c + w] += values * wt
            if out.std is not None:
                self.acc[c_n:, rr : rr + h, c : c + w] += out.std * wt
            self.wsum[rr : rr + h, c : c + w] += wt
            self.bad[rr : rr + h, c : c + w] |= out.invalid

    def finish(self, next_r: int) -> tuple[np.ndarray, Window]:
        """The final values of the rows above ``next_r`` (no later window reaches them) and
        where to write them; a new array, so the strip can move on while it is written."""
        k = next_r - self.top
        out = self.acc[:, :k] / np.maximum(self.wsum[:k], 1e-12)
        bad = self.bad[:k] | ~np.all(np.isfinite(out), axis=0)  # never a NaN on disk
        self.n_valid += int(bad.size - bad.sum())
        window = Window(0, self.top, self.grid.width, k)
        return as_stored(out, bad, self.dtype), window

    def _offset(self, metres: np.ndarray, valid: np.ndarray, r: int, c: int) -> float:
        """The offset (m) anchoring one relative window: the reference's mean minus the
        prediction's over the pixels valid in both, else agreement with the windows already
        blended where they overlap; an error where neither exists."""
        if not valid.any():
            return 0.0
        h, w = metres.shape
        if self.ref is not None:
            ref = self.ref.window(self.grid.window_transform(Window(c, r, w, h)), (h, w))
            both = valid & np.isfinite(ref)
            if both.any():
                return float(np.mean(ref[both] - metres[both]))
        rr = r - self.top
        wsum = self.wsum[rr : rr + h, c : c + w]
        both = (wsum > 0.05) & valid
        if not both.any():
            if self.ref is not None:
                raise InputError(
                    f"{self.ref.path}: the reference DEM has no value under the image's valid "
                    f"pixels at rows {r}-{r + h}, columns {c}-{c + w} (it must cover the image)"
                )
            return 0.0
        blended = self.acc[0, rr : rr + h, c : c + w][both] / wsum[both]
        return float(np.mean(blended - metres[both]))
