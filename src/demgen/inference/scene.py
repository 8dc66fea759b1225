"""Predict a whole scene window by window, blend overlaps, stream a GeoTIFF in metres.

Windows overlap (25 % by default) and are blended with a smooth (Hann) weight, so
no seams appear at window borders (:mod:`demgen.inference.blend`). Only one strip of
rows, one window tall, is held in memory at a time; the output keeps the input's CRS and
transform, records the vertical datum the model was trained on (the ``vertical_crs`` tag)
and appears on disk only when complete.

Invalid input pixels (NaN/inf, the file's nodata value, GDAL mask bands) are filled with
the training image fill before the network and are exactly the nodata (-9999) pixels of
the output; no output band holds a NaN (:mod:`demgen.inference.readers`). An image without
a single valid pixel is refused (InputError) and nothing is written.

Relative models (per-chip normalizations such as ``global-shift``) predict heights
up to an unknown offset per window, so their default window is the training chip size
(the extent the offset is defined over). With a coarse reference DEM each window's
offset makes its mean match the reference's over the pixels valid in both; without
one, each window is offset to agree with the windows already blended where they
overlap, and the output is labelled relative.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rasterio.io import DatasetReader
from rasterio.warp import Resampling
from tqdm.auto import tqdm

from demgen.errors import CheckpointError, InputError, first_line
from demgen.inference.blend import NODATA, _Blender, _Reference, blend_weight, window_starts
from demgen.inference.readers import _ImageReader, _RefineReader
from demgen.io.geodesy import VERTICAL_CRS_TAG
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

__all__ = [
    "NODATA",
    "blend_weight",
    "default_window",
    "load_task",
    "output_paths",
    "predict_refine_scene",
    "predict_scene",
    "window_starts",
]

RESOLUTION_TOLERANCE = 0.02  # relative pixel-size mismatch accepted without --any-resolution


def default_window(task) -> int:
    """The window side (px) used when none is given: the training chip size for relative
    (per-chip) models and refinement, whose offset or residual scale is defined per chip,
    else twice the chip size (fewer windows, more context)."""
    chip = int(task.hparams.chip_size)
    if getattr(task, "task_name", "") == "refine" or getattr(task, "relative", False):
        return chip
    return 2 * chip


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
    (metres) across the 8 flips/rotations. Pixels whose input is invalid (non-finite, the
    nodata value, masked by a GDAL mask band) are filled before the network (see
    :mod:`demgen.inference.readers`) and written as nodata (-9999), exactly those pixels;
    no band holds a NaN. An image with no valid pixel raises InputError and writes
    nothing. ``window`` defaults to :func:`default_window`.
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
        return _predict(task, reader, src, out_path, window=window or default_window(task),
                        overlap=overlap, batch_size=batch_size, tta=tta, ref=ref, cog=cog,
                        progress=progress, source=image_path)  # fmt: skip


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
    normalization. Invalid pixels are handled as in :func:`predict_scene` (an extra
    layer's invalid pixels are nodata in the output too, except the holes of the initial
    DSM, which the task fills).
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
        return _predict(task, reader, img, out_path, window=window or default_window(task),
                        overlap=overlap, batch_size=batch_size, tta=tta, ref=None, cog=cog,
                        progress=progress, source=img_path)  # fmt: skip


def _predict(task, reader, grid, out_path, *, window, overlap, batch_size, tta, ref, cog,
             progress, source) -> Path:  # fmt: skip
    """Stream blended windows over ``grid`` (an open dataset) into a GeoTIFF at ``out_path``;
    InputError naming ``source`` (and no file) when no pixel of it is valid."""
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
            "heights": "absolute" if absolute else "relative",
            VERTICAL_CRS_TAG: str(task.hparams.get("vertical_crs") or "unknown")}  # fmt: skip
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
            if blender.n_valid == 0:  # raised inside the writer: no file appears
                raise InputError(
                    f"{source}: no valid pixel (every pixel is nodata, masked or not finite)"
                )
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
