"""Predict a whole scene window by window, blend overlaps, stream a GeoTIFF in metres.

Windows overlap (25 % by default) and are blended with a smooth (Hann) weight, so
no seams appear at window borders. Only one strip of rows, one window tall, is held
in memory at a time; the output keeps the input's CRS and transform and appears
on disk only when complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from demgen.errors import InputError
from demgen.io.raster import geotiff_profile, open_raster, open_writer
from demgen.precision import autocast_dtype, default_device, resolve_precision
from demgen.tasks.regression import DEMRegressionTask

NODATA = -9999.0


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


def _padded(block: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad a (C, H, W) block so H and W are multiples of ``multiple``."""
    h, w = block.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "edge"
        block = np.pad(block, ((0, 0), (0, ph), (0, pw)), mode=mode)
    return block, (h, w)


def predict_array(
    task: DEMRegressionTask,
    blocks: list[np.ndarray],
    *,
    device: str,
    amp_dtype: torch.dtype | None,
) -> list[np.ndarray]:
    """Heights in metres for a batch of (bands, h, w) DN blocks of equal size."""
    x = np.stack([task.image_norm.apply(b.astype(np.float32)) for b in blocks])
    x, (h, w) = _padded_batch(x, task.size_multiple)
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    with (
        torch.inference_mode(),
        torch.autocast(
            device_type=device.split(":")[0],
            dtype=amp_dtype or torch.float32,
            enabled=amp_dtype is not None,
        ),
    ):
        out = task.predict_metres(xt)
    out = out[:, 0, :h, :w].float().cpu().numpy()
    return list(out)


def _padded_batch(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    padded = [_padded(b, multiple) for b in x]
    return np.stack([p[0] for p in padded]), padded[0][1]


def _window_rows(
    height: int, width: int, window: int, stride: int
) -> Iterator[tuple[int, list[int]]]:
    cols = window_starts(width, window, stride)
    for r in window_starts(height, window, stride):
        yield r, cols


def predict_scene(
    task: DEMRegressionTask,
    image_path: str | Path,
    out_path: str | Path,
    *,
    window: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    precision: str = "auto",
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Predict heights (metres) for every pixel of ``image_path`` and write ``out_path``.

    Pixels whose input is nodata or non-finite are written as nodata (-9999).
    """
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    device = device or default_device()
    amp_dtype = autocast_dtype(resolve_precision(precision, device))
    task = task.eval().to(device)
    if amp_dtype is not None and task.hparams.channels_last:
        task.model.to(memory_format=torch.channels_last)

    with open_raster(image_path) as src:
        if src.crs is None:
            raise InputError(f"{image_path}: raster has no CRS (georeferencing is required)")
        names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
        missing = [b for b in task.bands if b not in names]
        if missing:
            raise InputError(
                f"{image_path}: bands {missing} required by the model are not in the image "
                f"(image has {names})"
            )
        band_idx = [names.index(b) + 1 for b in task.bands]
        H, W = src.height, src.width
        win = window or 2 * task.hparams.chip_size
        win = min(win, H, W) if min(H, W) >= task.size_multiple else win
        stride = max(1, int(round(win * (1 - overlap))))
        weight_full = blend_weight(win)
        profile = geotiff_profile(
            width=W, height=H, count=1, dtype="float32",
            crs=src.crs, transform=src.transform, nodata=NODATA,
        )  # fmt: skip
        rows = list(_window_rows(H, W, win, stride))
        total = sum(len(c) for _, c in rows)
        bar = tqdm(total=total, desc="predict", unit="win", disable=not progress)
        with open_writer(
            out_path,
            profile,
            descriptions=[task.hparams.target],
            units=["metre"],
            tags={"demgen_target": task.hparams.target, "units": "metre"},
        ) as dst:
            buf_start = 0
            acc = np.zeros((win, W), np.float32)
            wsum = np.zeros((win, W), np.float32)
            bad = np.zeros((win, W), bool)
            for ri, (r, cols) in enumerate(rows):
                h = min(win, H - r)
                # Shift the strip buffer so it starts at row r.
                shift = r - buf_start
                if shift:
                    acc, wsum, bad = (np.roll(a, -shift, axis=0) for a in (acc, wsum, bad))
                    acc[-shift:], wsum[-shift:], bad[-shift:] = 0, 0, False
                    buf_start = r
                for c0 in range(0, len(cols), batch_size):
                    batch_cols = cols[c0 : c0 + batch_size]
                    blocks = [
                        src.read(band_idx, window=Window(c, r, min(win, W - c), h))
                        for c in batch_cols
                    ]
                    preds = predict_array(task, blocks, device=device, amp_dtype=amp_dtype)
                    for c, blk, pred in zip(batch_cols, blocks, preds, strict=True):
                        w = pred.shape[1]
                        wt = weight_full[:h, :w]
                        acc[:h, c : c + w] += pred * wt
                        wsum[:h, c : c + w] += wt
                        invalid = ~np.all(np.isfinite(blk), axis=0)
                        if src.nodata is not None:
                            invalid |= np.any(blk == src.nodata, axis=0)
                        bad[:h, c : c + w] |= invalid
                    bar.update(len(batch_cols))
                # Rows before the next window row are final: write them.
                next_r = rows[ri + 1][0] if ri + 1 < len(rows) else H
                n_final = next_r - buf_start
                out = acc[:n_final] / np.maximum(wsum[:n_final], 1e-12)
                out[bad[:n_final]] = NODATA
                dst.write(out.astype(np.float32)[None], window=Window(0, buf_start, W, n_final))
        bar.close()
    return Path(out_path)


def load_task(checkpoint: str | Path, device: str = "cpu") -> DEMRegressionTask:
    """Load a regression checkpoint; a missing or corrupt file raises InputError."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise InputError(f"{checkpoint}: no such checkpoint")
    try:
        return DEMRegressionTask.load_from_checkpoint(checkpoint, map_location=device)
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputError(f"{checkpoint}: not a readable demgen checkpoint ({exc})") from exc
