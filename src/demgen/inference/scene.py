"""Predict a whole scene window by window, blend overlaps, stream a GeoTIFF in metres.

Windows overlap (25 % by default) and are blended with a smooth (Hann) weight, so
no seams appear at window borders. Only one strip of rows, one window tall, is held
in memory at a time; the output keeps the input's CRS and transform and appears
on disk only when complete.

Relative models (per-chip normalizations such as ``global-shift``) predict heights
up to an unknown offset per window. With a coarse reference DEM each window's
offset is set so its mean matches the reference's mean over the window; without
one, each window is offset to agree with the windows already blended where they
overlap, and the output is labelled relative.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.io import DatasetReader
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window
from tqdm.auto import tqdm

from demgen.errors import InputError, first_line
from demgen.io.raster import (
    geotiff_profile,
    open_raster,
    open_writer,
    pixel_size_metres,
    write_cog,
)
from demgen.precision import autocast_dtype, default_device, resolve_precision
from demgen.tasks.common import DEMTask
from demgen.tasks.regression import DEMRegressionTask

NODATA = -9999.0
RESOLUTION_TOLERANCE = 0.02  # relative pixel-size mismatch accepted without --any-resolution


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


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad a (B, C, H, W) tensor so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations of the square's symmetry group (k in 0..7)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` with the same k."""
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


@dataclass
class _Runner:
    """Runs the model on batches of DN blocks: normalization, padding, precision, TTA."""

    task: DEMRegressionTask
    device: str
    amp_dtype: torch.dtype | None
    tta: bool

    def __call__(self, blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Heights in normalized units (B, h, w), and their TTA std (or None)."""
        x = np.stack([self.task.image_norm.apply(b.astype(np.float32)) for b in blocks])
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        outs = [self._one(dihedral(xt, k), k) for k in (range(8) if self.tta else [0])]
        stack = torch.stack(outs)
        std = stack.std(dim=0, unbiased=False).cpu().numpy() if self.tta else None
        return stack.mean(dim=0).cpu().numpy(), std

    def _one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        x, (h, w) = _pad_to(x, self.task.size_multiple)
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type=self.device.split(":")[0],
                dtype=self.amp_dtype or torch.float32,
                enabled=self.amp_dtype is not None,
            ),
        ):
            z = self.task(x).float()[:, 0, :h, :w]
        return dihedral_inverse(z, k)


def _window_rows(
    height: int, width: int, window: int, stride: int
) -> Iterator[tuple[int, list[int]]]:
    cols = window_starts(width, window, stride)
    for r in window_starts(height, window, stride):
        yield r, cols


def _check_inputs(task: DEMRegressionTask, src: DatasetReader, path: Path, any_res: bool):
    """Band indices for the model's bands; errors for missing CRS, bands or resolution."""
    if src.crs is None:
        raise InputError(f"{path}: raster has no CRS (georeferencing is required)")
    names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
    missing = [b for b in task.bands if b not in names]
    if missing:
        raise InputError(
            f"{path}: bands {missing} required by the model are not in the image "
            f"(image has {names})"
        )
    trained = task.hparams.get("pixel_size")
    if trained and not any_res:
        px = pixel_size_metres(src)
        if abs(px - trained) > RESOLUTION_TOLERANCE * trained:
            raise InputError(
                f"{path}: pixel size {px:.2f} m differs from the model's {trained:g} m "
                "(resample the image, or pass --any-resolution to predict anyway)"
            )
    return [names.index(b) + 1 for b in task.bands]


class _Reference:
    """A coarse DEM read on each window's grid, to anchor relative predictions."""

    def __init__(self, path: str | Path, dst: DatasetReader) -> None:
        self.path = Path(path)
        self.dst_crs = dst.crs
        with open_raster(self.path) as ds:
            if ds.crs is None:
                raise InputError(f"{self.path}: raster has no CRS (georeferencing is required)")
            self.data = ds.read(1).astype(np.float32)
            if ds.nodata is not None:
                self.data[self.data == ds.nodata] = np.nan
            self.crs, self.transform = ds.crs, ds.transform

    def window_mean(self, transform, shape: tuple[int, int]) -> float:
        out = np.full(shape, np.nan, np.float32)
        reproject(
            self.data, out, src_transform=self.transform, src_crs=self.crs, src_nodata=np.nan,
            dst_transform=transform, dst_crs=self.dst_crs, dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )  # fmt: skip
        if not np.isfinite(out).any():
            raise InputError(f"{self.path}: the reference DEM does not cover the whole image")
        return float(np.nanmean(out))


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
    tta: bool = False,
    reference: str | Path | None = None,
    cog: bool = False,
    any_resolution: bool = False,
    progress: bool = True,
) -> Path:
    """Predict heights (metres) for every pixel of ``image_path`` and write ``out_path``.

    Band 1 is the height; with ``tta`` band 2 is the per-pixel standard deviation
    (metres) across the 8 flips/rotations. Pixels whose input is nodata or
    non-finite are written as nodata (-9999).
    """
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    image_path = Path(image_path)
    device = device or default_device()
    amp_dtype = autocast_dtype(resolve_precision(precision, device))
    task = task.eval().to(device)
    if task.hparams.channels_last:
        task.model.to(memory_format=torch.channels_last)
    norm = task.elevation_norm
    relative = bool(getattr(norm, "per_chip", False))
    if norm.strategy == "residual":
        raise InputError(
            "refinement checkpoints (residual normalization) are not supported by this predictor"
        )
    run = _Runner(task, device, amp_dtype, tta)

    with open_raster(image_path) as src:
        band_idx = _check_inputs(task, src, image_path, any_resolution)
        ref = _Reference(reference, src) if reference is not None and relative else None
        H, W = src.height, src.width
        win = window or 2 * task.hparams.chip_size
        win = min(win, H, W) if min(H, W) >= task.size_multiple else win
        stride = max(1, int(round(win * (1 - overlap))))
        n_out = 2 if tta else 1
        profile = geotiff_profile(
            width=W, height=H, count=n_out, dtype="float32",
            crs=src.crs, transform=src.transform, nodata=NODATA,
        )  # fmt: skip
        absolute = not relative or ref is not None
        label = task.hparams.target if absolute else f"relative {task.hparams.target}"
        descriptions = [label] + (["tta_std"] if tta else [])
        tags = {
            "demgen_target": task.hparams.target,
            "units": "metre",
            "heights": "absolute" if absolute else "relative",
        }
        rows = list(_window_rows(H, W, win, stride))
        bar = tqdm(total=sum(len(c) for _, c in rows), desc="predict", unit="win",
                   disable=not progress)  # fmt: skip
        final_path = Path(out_path)
        # A COG is made from a finished GeoTIFF: stage that one beside the output.
        tiff_path = final_path.with_name(f".{final_path.name}.stage.tif") if cog else final_path
        try:
            with open_writer(tiff_path, profile, descriptions=descriptions,
                             units=["metre"] * n_out, tags=tags) as dst:  # fmt: skip
                blender = _Blender(src, dst, band_idx, win, n_out, norm, relative, ref)
                for ri, (r, cols) in enumerate(rows):
                    blender.start_row(r)
                    for c0 in range(0, len(cols), batch_size):
                        batch_cols = cols[c0 : c0 + batch_size]
                        blender.add(r, batch_cols, run)
                        bar.update(len(batch_cols))
                    blender.flush(rows[ri + 1][0] if ri + 1 < len(rows) else H)
            if cog:
                write_cog(tiff_path, final_path)
        finally:
            if cog:
                tiff_path.unlink(missing_ok=True)
        bar.close()
    return final_path


class _Blender:
    """Weighted sums of overlapping windows over one strip of rows, flushed when final."""

    def __init__(self, src, dst, band_idx, win, n_out, norm, relative, ref) -> None:
        self.src, self.dst, self.band_idx, self.win = src, dst, band_idx, win
        self.norm, self.relative, self.ref = norm, relative, ref
        self.weight = blend_weight(win)
        W = src.width
        self.acc = np.zeros((n_out, win, W), np.float64)  # height, then TTA std
        self.wsum = np.zeros((win, W), np.float64)
        self.bad = np.zeros((win, W), bool)
        self.top = 0  # scene row of the strip's first row

    def start_row(self, r: int) -> None:
        """Move the strip down so it starts at scene row ``r`` (rows above are written)."""
        shift = r - self.top
        if shift:
            self.acc = np.roll(self.acc, -shift, axis=1)
            self.wsum = np.roll(self.wsum, -shift, axis=0)
            self.bad = np.roll(self.bad, -shift, axis=0)
            self.acc[:, -shift:], self.wsum[-shift:], self.bad[-shift:] = 0, 0, False
            self.top = r

    def add(self, r: int, cols: list[int], run: _Runner) -> None:
        """Predict the windows at row ``r`` and columns ``cols``, and blend them in."""
        H, W, win = self.src.height, self.src.width, self.win
        h = min(win, H - r)
        blocks = [
            self.src.read(self.band_idx, window=Window(c, r, min(win, W - c), h)) for c in cols
        ]
        z, z_std = run(blocks)
        rr = r - self.top
        for j, (c, blk) in enumerate(zip(cols, blocks, strict=True)):
            w = blk.shape[-1]
            invalid = ~np.all(np.isfinite(blk), axis=0)
            if self.src.nodata is not None:
                invalid |= np.any(blk == self.src.nodata, axis=0)
            if self.relative:
                metres = self.norm.inverse(z[j], 0.0)
                metres = metres + self._offset(metres, ~invalid, r, c)
            else:
                metres = self.norm.inverse(z[j])
            wt = self.weight[:h, :w]
            self.acc[0, rr : rr + h, c : c + w] += metres * wt
            if z_std is not None:
                self.acc[1, rr : rr + h, c : c + w] += z_std[j] * self.norm.metres_per_unit * wt
            self.wsum[rr : rr + h, c : c + w] += wt
            self.bad[rr : rr + h, c : c + w] |= invalid

    def flush(self, next_r: int) -> None:
        """Write rows above ``next_r``: no later window reaches them."""
        k = next_r - self.top
        out = self.acc[:, :k] / np.maximum(self.wsum[:k], 1e-12)
        out[:, self.bad[:k]] = NODATA
        self.dst.write(out.astype(np.float32), window=Window(0, self.top, self.src.width, k))

    def _offset(self, metres: np.ndarray, valid: np.ndarray, r: int, c: int) -> float:
        """The offset (m) anchoring one relative window: the reference's mean over the
        window, else agreement with windows already blended where they overlap."""
        if not valid.any():
            return 0.0
        h, w = metres.shape
        if self.ref is not None:
            transform = self.src.window_transform(Window(c, r, w, h))
            return self.ref.window_mean(transform, (h, w)) - float(metres[valid].mean())
        rr = r - self.top
        wsum = self.wsum[rr : rr + h, c : c + w]
        both = (wsum > 0.05) & valid
        if not both.any():
            return 0.0
        blended = self.acc[0, rr : rr + h, c : c + w][both] / wsum[both]
        return float(np.mean(blended - metres[both]))


def load_task(checkpoint: str | Path, device: str = "cpu") -> DEMTask:
    """Load a task checkpoint as the class that wrote it (regression, pix2pix, drpan, ...).

    The class is picked by the task name saved in the checkpoint (checkpoints without
    one are regression). A missing or corrupt file, or an unknown task, raises InputError.
    """
    from demgen.tasks import task_class
    from demgen.tasks.common import checkpoint_task

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise InputError(f"{checkpoint}: no such checkpoint")
    try:
        # A demgen checkpoint holds plain config dicts besides tensors, as Lightning's do.
        name = checkpoint_task(torch.load(checkpoint, map_location="cpu", weights_only=False))
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputError(
            f"{checkpoint}: not a readable demgen checkpoint ({first_line(exc)})"
        ) from exc
    try:
        cls = task_class(name)
    except ValueError as exc:
        raise InputError(f"{checkpoint}: {exc}") from exc
    try:
        return cls.load_from_checkpoint(checkpoint, map_location=device)
    except Exception as exc:
        raise InputError(
            f"{checkpoint}: not a readable demgen checkpoint ({first_line(exc)})"
        ) from exc


def output_paths(inputs: list[Path], output: Path) -> list[Path]:
    """One output per input: ``output`` itself for one input not naming a folder, else
    ``output/<input stem>_dem.tif``; two inputs with the same stem are an error."""
    if len(inputs) == 1 and not (output.is_dir() or str(output).endswith(("/", "\\"))):
        return [output]
    outs = [output / f"{p.stem}_dem.tif" for p in inputs]
    if len(set(outs)) != len(outs):
        raise InputError("several inputs share a file name; predict them into separate folders")
    return outs
