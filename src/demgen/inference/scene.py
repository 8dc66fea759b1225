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

import contextlib
import copy
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.io import DatasetReader
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window
from tqdm.auto import tqdm

from demgen.data.augment import dihedral, dihedral_inverse
from demgen.errors import CheckpointError, InputError, first_line
from demgen.io.raster import (
    bounded_gdal_cache,
    geotiff_profile,
    open_raster,
    open_writer,
    pixel_size_metres,
    write_cog,
)
from demgen.models.fusion import fuse_conv_bn
from demgen.precision import autocast_dtype, default_device, resolve_precision
from demgen.tasks.common import DEMTask

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


def _autocast(device: str, amp_dtype: torch.dtype | None):
    return torch.autocast(
        device_type=device.split(":")[0],
        dtype=amp_dtype or torch.float32,
        enabled=amp_dtype is not None,
    )


def _tta_runs(
    fn, tensors: dict[str, torch.Tensor], tta: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and (with ``tta``) std over the 8 flips/rotations of ``fn(tensors)`` (B, h, w)."""
    if not tta:
        return fn(tensors).cpu().numpy(), None
    outs = []
    for k in range(8):
        out = fn({name: dihedral(t, k) for name, t in tensors.items()})
        outs.append(dihedral_inverse(out, k))
    stack = torch.stack(outs)
    return stack.mean(dim=0).cpu().numpy(), stack.std(dim=0, unbiased=False).cpu().numpy()


@dataclass
class _Window:
    """What a reader returns for one window: heights in metres and where the input is bad."""

    metres: np.ndarray
    std: np.ndarray | None
    invalid: np.ndarray


class _ImageReader:
    """Reads image windows and runs an image -> heights task (regression, pix2pix, drpan)."""

    def __init__(self, task, src, band_idx, device, amp_dtype, tta) -> None:
        self.task, self.src, self.band_idx = task, src, band_idx
        self.device, self.amp_dtype, self.tta = device, amp_dtype, tta
        self.norm = task.elevation_norm
        self.relative = bool(getattr(self.norm, "per_chip", False))

    def __call__(self, windows: list[Window]) -> list[_Window]:
        return self.run(self.load(windows))

    def load(self, windows: list[Window]) -> tuple[list[np.ndarray], np.ndarray]:
        """Read and normalize a batch of windows (the I/O half, run ahead in a thread)."""
        blocks = [self.src.read(self.band_idx, window=w) for w in windows]
        x = np.stack([self.task.image_norm.apply(b.astype(np.float32)) for b in blocks])
        return blocks, np.ascontiguousarray(x, dtype=np.float32)

    def run(self, loaded: tuple[list[np.ndarray], np.ndarray]) -> list[_Window]:
        """Predict a loaded batch: heights in metres and invalid pixels per window."""
        blocks, x = loaded
        xt = torch.from_numpy(x).to(self.device)
        z, z_std = _tta_runs(lambda t: self._run(t["image"]), {"image": xt}, self.tta)
        out = []
        for j, blk in enumerate(blocks):
            invalid = ~np.all(np.isfinite(blk), axis=0)
            if self.src.nodata is not None:
                invalid |= np.any(blk == self.src.nodata, axis=0)
            # Relative (per-chip) models: heights up to an offset the blender decides.
            metres = self.norm.inverse(z[j], 0.0) if self.relative else self.norm.inverse(z[j])
            std = None if z_std is None else z_std[j] * self.norm.metres_per_unit
            out.append(_Window(np.asarray(metres, np.float64), std, invalid))
        return out

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = _pad_to(x, self.task.size_multiple)
        with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
            return self.task(x).float()[:, 0, :h, :w]


class _RefineReader:
    """Reads the named input layers of a refinement task and returns refined heights.

    ``layers`` maps each input name to an open dataset on the output grid: ``ortho1``
    (the image, bands as the checkpoint's), and each extra layer the task stacks.
    """

    def __init__(self, task, layers, device, amp_dtype, tta) -> None:
        self.task, self.layers = task, layers
        self.device, self.amp_dtype, self.tta = device, amp_dtype, tta
        self.relative = False
        img = layers["ortho1"]
        names = [d or f"band{i + 1}" for i, d in enumerate(img.descriptions)]
        self.image_bands = [names.index(b) + 1 for b in task.bands]

    def _extra_channel(self, e: dict, window: Window) -> np.ndarray:
        ds = self.layers[e.get("layer", e["name"])]
        band = 1
        if ds.count > 1:  # a multi-band layer stored band by band (ortho2_B2 ...)
            names = [d or f"band{i + 1}" for i, d in enumerate(ds.descriptions)]
            wanted = e.get("band") or e["name"].rsplit("_", 1)[-1]
            band = names.index(wanted) + 1 if wanted in names else 1
        a = ds.read(band, window=window).astype(np.float32)
        if ds.nodata is not None:
            a[a == ds.nodata] = np.nan
        return a

    def __call__(self, windows: list[Window]) -> list[_Window]:
        return self.run(self.load(windows))

    def load(self, windows: list[Window]) -> dict[str, np.ndarray]:
        """Read and stack every input layer of a batch of windows (the I/O half)."""
        task = self.task
        needed = {e.get("layer", e["name"]) for e in task.extras} & set(self.layers)
        images, extras, invalid = [], [], []
        for w in windows:
            blk = self.layers["ortho1"].read(self.image_bands, window=w).astype(np.float32)
            ext = np.stack([
                self._extra_channel(e, w) if e.get("layer", e["name"]) in needed
                else np.full(blk.shape[1:], np.nan, np.float32)
                for e in task.extras
            ])  # fmt: skip
            bad = ~np.all(np.isfinite(blk), axis=0)
            nd = self.layers["ortho1"].nodata
            if nd is not None:
                bad |= np.any(blk == nd, axis=0)
            # Holes of "gap" layers (the initial DSM) are filled by the task, not masked.
            for i, e in enumerate(task.extras):
                if e.get("layer", e["name"]) in needed and not e.get("gaps", False):
                    bad |= ~np.isfinite(ext[i])
            images.append(task.image_norm.apply(blk))
            extras.append(ext)
            invalid.append(bad)
        return {"image": np.stack(images), "extra": np.stack(extras), "invalid": np.stack(invalid)}

    def run(self, loaded: dict[str, np.ndarray]) -> list[_Window]:
        """Refine a loaded batch: heights in metres and invalid pixels per window."""
        invalid = loaded["invalid"]
        t = {
            "image": torch.from_numpy(loaded["image"]).float().to(self.device),
            "extra": torch.from_numpy(loaded["extra"]).float().to(self.device),
            "mask": torch.from_numpy(~invalid)[:, None].to(self.device),
        }
        t["extra_valid"] = torch.isfinite(t["extra"])
        t["extra"] = torch.nan_to_num(t["extra"], nan=0.0)
        mean, std = _tta_runs(self._run, t, self.tta)
        return [
            _Window(mean[j].astype(np.float64), None if std is None else std[j], invalid[j])
            for j in range(len(invalid))
        ]

    def _run(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        h, w = t["image"].shape[-2:]
        m = self.task.size_multiple
        if h % m or w % m:  # pad every layer alike (edge values), crop the result
            t = {
                k: _pad_to(v.float(), m)[0].to(v.dtype) if v.dtype != torch.bool
                else _pad_to(v.float(), m)[0] > 0.5
                for k, v in t.items()
            }  # fmt: skip
        with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
            return self.task.refine_metres(t).float()[:, 0, :h, :w]


def _window_rows(
    height: int, width: int, window: int, stride: int
) -> Iterator[tuple[int, list[int]]]:
    cols = window_starts(width, window, stride)
    for r in window_starts(height, window, stride):
        yield r, cols


def _band_indices(task, src: DatasetReader, path: Path) -> list[int]:
    """1-based indices of the model's bands in ``src``, matched by band description."""
    names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
    missing = [b for b in task.bands if b not in names]
    if missing:
        raise InputError(
            f"{path}: bands {missing} required by the model are not in the image "
            f"(image has {names})"
        )
    return [names.index(b) + 1 for b in task.bands]


def _check_grid(task, src: DatasetReader, path: Path, any_res: bool) -> None:
    """Errors for a missing CRS, or a pixel size unlike the training data's."""
    if src.crs is None:
        raise InputError(f"{path}: raster has no CRS (georeferencing is required)")
    trained = task.hparams.get("pixel_size")
    if trained and not any_res:
        px = pixel_size_metres(src)
        if abs(px - trained) > RESOLUTION_TOLERANCE * trained:
            raise InputError(
                f"{path}: pixel size {px:.2f} m differs from the model's {trained:g} m "
                "(resample the image, or pass --any-resolution to predict anyway)"
            )


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


def _prepare(task, device: str | None, precision: str):
    """An inference copy of ``task`` on ``device``: eval mode, BatchNorms folded into the
    convs, channels_last (NHWC, faster for inference in fp32 and bf16 alike). The caller's
    task is left as it was, still trainable."""
    device = device or default_device()
    amp_dtype = autocast_dtype(resolve_precision(precision, device))
    task = copy.deepcopy(task).eval().to(device)
    fuse_conv_bn(task)
    task.set_channels_last(True)
    return task, device, amp_dtype


def predict_scene(
    task: DEMTask,
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
    if getattr(task, "task_name", "") == "refine":
        raise InputError(
            "a refinement checkpoint needs its named input layers: use predict_refine_scene "
            "(CLI: --layer NAME=PATH)"
        )
    task, device, amp_dtype = _prepare(task, device, precision)
    image_path = Path(image_path)
    with bounded_gdal_cache(), open_raster(image_path) as src:
        _check_grid(task, src, image_path, any_resolution)
        reader = _ImageReader(task, src, _band_indices(task, src, image_path), device,
                              amp_dtype, tta)  # fmt: skip
        ref = _Reference(reference, src) if reference is not None and reader.relative else None
        return _predict(task, reader, src, out_path, window=window or 2 * task.hparams.chip_size,
                        overlap=overlap, batch_size=batch_size, tta=tta, ref=ref, cog=cog,
                        progress=progress)  # fmt: skip


def predict_refine_scene(
    task: DEMTask,
    layers: dict[str, str | Path],
    out_path: str | Path,
    *,
    window: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    precision: str = "auto",
    device: str | None = None,
    tta: bool = False,
    cog: bool = False,
    any_resolution: bool = False,
    progress: bool = True,
) -> Path:
    """Refine a DSM over a whole scene from the named layers a refinement checkpoint stacks.

    ``layers`` maps input names to rasters: ``ortho1`` (the image; the output takes its
    grid) and every extra layer the checkpoint uses (``initial_dsm``, ``ortho2``,
    ``triangulation_error``, ...). Layers on another grid are warped onto the image's
    (bilinear). Windows default to the training chip size, the scale of the residual
    normalization.
    """
    from rasterio.vrt import WarpedVRT

    needed = sorted({e.get("layer", e["name"]) for e in task.extras
                     if e.get("layer", e["name"]) in task.hparams.inputs} | {"ortho1"})  # fmt: skip
    missing = [n for n in needed if n not in layers]
    if missing:
        raise InputError(
            f"the refinement checkpoint needs layers {needed}; missing {missing} "
            "(pass them as NAME=PATH)"
        )
    task, device, amp_dtype = _prepare(task, device, precision)
    with contextlib.ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache())
        img_path = Path(layers["ortho1"])
        img = stack.enter_context(open_raster(img_path))
        _check_grid(task, img, img_path, any_resolution)
        _band_indices(task, img, img_path)
        opened = {"ortho1": img}
        for name in needed:
            if name == "ortho1":
                continue
            ds = stack.enter_context(open_raster(layers[name]))
            if ds.crs is None:
                raise InputError(f"{layers[name]}: raster has no CRS (georeferencing is required)")
            if not (ds.crs == img.crs and ds.transform.almost_equals(img.transform)
                    and ds.shape == img.shape):  # fmt: skip
                ds = stack.enter_context(WarpedVRT(
                    ds, crs=img.crs, transform=img.transform, width=img.width,
                    height=img.height, resampling=Resampling.bilinear,
                    src_nodata=ds.nodata, nodata=ds.nodata if ds.nodata is not None else np.nan,
                ))  # fmt: skip
            opened[name] = ds
        reader = _RefineReader(task, opened, device, amp_dtype, tta)
        return _predict(task, reader, img, out_path, window=window or task.hparams.chip_size,
                        overlap=overlap, batch_size=batch_size, tta=tta, ref=None, cog=cog,
                        progress=progress)  # fmt: skip


def _predict(task, reader, grid, out_path, *, window, overlap, batch_size, tta, ref, cog,
             progress) -> Path:  # fmt: skip
    """Stream blended windows over ``grid`` (an open dataset) into a GeoTIFF at ``out_path``."""
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    H, W = grid.height, grid.width
    win = min(window, H, W) if min(H, W) >= task.size_multiple else window
    stride = max(1, int(round(win * (1 - overlap))))
    n_out = 2 if tta else 1
    profile = geotiff_profile(
        width=W, height=H, count=n_out, dtype="float32",
        crs=grid.crs, transform=grid.transform, nodata=NODATA,
    )  # fmt: skip
    absolute = not reader.relative or ref is not None
    target = task.hparams.target
    descriptions = [target if absolute else f"relative {target}"] + (["tta_std"] if tta else [])
    tags = {"demgen_target": target, "units": "metre",
            "heights": "absolute" if absolute else "relative"}  # fmt: skip
    rows = list(_window_rows(H, W, win, stride))
    bar = tqdm(total=sum(len(c) for _, c in rows), desc="predict", unit="win",
               disable=not progress)  # fmt: skip
    final_path = Path(out_path)
    # A COG is made from a finished GeoTIFF: stage that one beside the output.
    tiff_path = final_path.with_name(f".{final_path.name}.stage.tif") if cog else final_path
    try:
        with open_writer(tiff_path, profile, descriptions=descriptions,
                         units=["metre"] * n_out, tags=tags) as dst:  # fmt: skip
            blender = _Blender(grid, dst, win, n_out, reader.relative, ref)
            _run_pipeline(rows, batch_size, blender, reader, H, bar)
        if cog:
            write_cog(tiff_path, final_path)
    finally:
        bar.close()
        if cog:
            tiff_path.unlink(missing_ok=True)
    return final_path


def _run_pipeline(rows, batch_size, blender, reader, H, bar) -> None:
    """Predict and blend every window, row by row, with the I/O in a second thread: while
    the model runs on one batch, the thread reads the next one and writes finished rows
    (GDAL decompresses and compresses there; one thread keeps every dataset single-user)."""
    jobs = [
        (ri, r, cols[c0 : c0 + batch_size])
        for ri, (r, cols) in enumerate(rows)
        for c0 in range(0, len(cols), batch_size)
    ]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="demgen-io") as io:
        writes = []
        pending = io.submit(reader.load, blender.windows(*jobs[0][1:])) if jobs else None
        for i, (ri, r, cols) in enumerate(jobs):
            loaded = pending.result()
            if i + 1 < len(jobs):
                pending = io.submit(reader.load, blender.windows(*jobs[i + 1][1:]))
            if i == 0 or jobs[i - 1][0] != ri:
                blender.start_row(r)
            blender.add(r, cols, reader.run(loaded))
            bar.update(len(cols))
            if i + 1 == len(jobs) or jobs[i + 1][0] != ri:
                next_r = rows[ri + 1][0] if ri + 1 < len(rows) else H
                values, window = blender.finish(next_r)
                writes.append(io.submit(blender.dst.write, values, window=window))
        for w in writes:
            w.result()  # re-raise a failed write


class _Blender:
    """Weighted sums of overlapping windows over one strip of rows, flushed when final."""

    def __init__(self, grid, dst, win, n_out, relative, ref) -> None:
        self.grid, self.dst, self.win = grid, dst, win
        self.relative, self.ref = relative, ref
        self.weight = blend_weight(win)
        W = grid.width
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

    def windows(self, r: int, cols: list[int]) -> list[Window]:
        """The windows at scene row ``r`` and columns ``cols`` (clipped to the scene)."""
        H, W, win = self.grid.height, self.grid.width, self.win
        return [Window(c, r, min(win, W - c), min(win, H - r)) for c in cols]

    def add(self, r: int, cols: list[int], outs: list[_Window]) -> None:
        """Blend the predicted windows at row ``r`` and columns ``cols`` in."""
        H, win = self.grid.height, self.win
        h = min(win, H - r)
        rr = r - self.top
        for c, out in zip(cols, outs, strict=True):
            w = out.metres.shape[1]
            metres = out.metres
            if self.relative:
                metres = metres + self._offset(metres, ~out.invalid, r, c)
            wt = self.weight[:h, :w]
            self.acc[0, rr : rr + h, c : c + w] += metres * wt
            if out.std is not None:
                self.acc[1, rr : rr + h, c : c + w] += out.std * wt
            self.wsum[rr : rr + h, c : c + w] += wt
            self.bad[rr : rr + h, c : c + w] |= out.invalid

    def finish(self, next_r: int) -> tuple[np.ndarray, Window]:
        """The final values of the rows above ``next_r`` (no later window reaches them) and
        where to write them; a new array, so the strip can move on while it is written."""
        k = next_r - self.top
        out = self.acc[:, :k] / np.maximum(self.wsum[:k], 1e-12)
        out[:, self.bad[:k]] = NODATA
        return out.astype(np.float32), Window(0, self.top, self.grid.width, k)

    def _offset(self, metres: np.ndarray, valid: np.ndarray, r: int, c: int) -> float:
        """The offset (m) anchoring one relative window: the reference's mean over the
        window, else agreement with windows already blended where they overlap."""
        if not valid.any():
            return 0.0
        h, w = metres.shape
        if self.ref is not None:
            transform = self.grid.window_transform(Window(c, r, w, h))
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
    one are regression). The file is read as data only (``weights_only=True``): a missing,
    corrupt or code-carrying file, or an unknown task, raises CheckpointError.
    """
    from demgen.io.checkpoint import read_checkpoint
    from demgen.tasks import task_class
    from demgen.tasks.common import checkpoint_task

    checkpoint = Path(checkpoint)
    name = checkpoint_task(read_checkpoint(checkpoint))
    try:
        cls = task_class(name)
    except ValueError as exc:
        raise CheckpointError(f"{checkpoint}: {exc}") from exc
    try:
        return cls.load_from_checkpoint(checkpoint, map_location=device, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
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
