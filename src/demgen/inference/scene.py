"""Predict a whole scene window by window, blend overlaps, stream one GeoTIFF per output.

One :func:`predict_scene` serves every task: it reads the named input layers of the task's
:class:`~demgen.tasks.spec.TaskSpec` (``task.spec``) window by window, the first input's grid
being the output grid (other inputs on another grid are warped onto it, bilinear), and runs
``task.predict_batch`` (:mod:`demgen.inference.readers`). Windows overlap (25 % by default)
and are blended with a smooth (Hann) weight, so no seams appear at window borders
(:mod:`demgen.inference.blend`). Only one strip of rows, one window tall, is held in memory
at a time; each output keeps the grid input's CRS and transform, has its band descriptions
and unit, records the vertical datum the model was trained on (the ``vertical_crs`` tag) when
its unit is metres, and appears on disk only when complete.

Invalid input pixels (NaN/inf, the file's nodata value, GDAL mask bands) are filled with the
task's fill before the network and are exactly the nodata (-9999) pixels of the outputs
(except the holes of inputs the task fills itself, ``gaps``); no output band holds a NaN. A
grid without a single valid pixel is refused (InputError) and nothing is written.

Relative outputs (``LayerSpec.relative``: per-chip normalizations such as ``global-shift``)
are heights up to an unknown offset per window, so the default window of such a task is the
training chip size (the extent the offset is defined over). With a coarse reference DEM
(the ``reference`` keyword, CLI ``--reference``) each window's offset makes its mean match
the reference's over the pixels valid in both; without one, each window is offset to agree
with the windows already blended where they overlap, and the output is labelled relative.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling
from tqdm.auto import tqdm

from demgen.errors import InputError
from demgen.inference.blend import _Blender, _Reference, blend_weight, window_starts
from demgen.inference.readers import _SceneReader, band_indices
from demgen.io.geodesy import VERTICAL_CRS_TAG
from demgen.io.raster import (
    NODATA,
    bounded_gdal_cache,
    geotiff_profile,
    open_raster,
    open_writer,
    pixel_size_metres,
    require_crs,
    write_cog,
)
from demgen.models.fusion import fuse_conv_bn
from demgen.precision import autocast_dtype, default_device, resolve_precision
from demgen.tasks.registry import load_task  # re-exported: loading lives with the tasks
from demgen.tasks.spec import LayerSpec, TaskSpec

__all__ = [
    "NODATA",
    "blend_weight",
    "default_window",
    "load_task",
    "output_files",
    "output_paths",
    "predict_scene",
    "resolve_inputs",
    "window_starts",
]

RESOLUTION_TOLERANCE = 0.02  # relative pixel-size mismatch accepted without --any-resolution


def default_window(task) -> int:
    """The window side (px) used when none is given: the task's ``spec.window`` (the training
    chip size for relative models and refinement, else twice it)."""
    return int(task.spec.window)


def _window_rows(
    height: int, width: int, window: int, stride: int
) -> Iterator[tuple[int, list[int]]]:
    cols = window_starts(width, window, stride)
    for r in window_starts(height, window, stride):
        yield r, cols


def _check_grid(task, src: DatasetReader, path: Path, any_res: bool) -> None:
    """Errors for a missing CRS, or a pixel size unlike the training data's."""
    require_crs(src, path)
    trained = task.hparams.get("pixel_size")
    if trained and not any_res:
        px = pixel_size_metres(src)
        if abs(px - trained) > RESOLUTION_TOLERANCE * trained:
            raise InputError(
                f"{path}: pixel size {px:.2f} m differs from the model's {trained:g} m "
                "(resample the image, or pass --any-resolution to predict anyway)"
            )


def inference_copy(task, device: str | None = None, precision: str = "auto"):
    """An inference copy of ``task`` on ``device``: eval mode, BatchNorms folded into the
    convs, channels_last (NHWC, faster for inference in fp32 and bf16 alike). The caller's
    task is left as it was, still trainable."""
    device = device or default_device()
    amp_dtype = autocast_dtype(resolve_precision(precision, device))
    task = copy.deepcopy(task).eval().to(device)
    fuse_conv_bn(task)
    task.set_channels_last(True)
    return task, device, amp_dtype


def resolve_inputs(spec: TaskSpec, inputs: Mapping[str, str | Path] | str | Path) -> dict:
    """``{input name: path}`` for every input of ``spec``: a plain path is the shorthand for
    the first (for a one-input task, the only) input. One-line InputError for an unknown
    name or a missing input, listing what the checkpoint needs."""
    if isinstance(inputs, str | Path):
        inputs = {spec.inputs[0].name: inputs}
    needed = spec.input_names
    unknown = [n for n in inputs if n not in needed]
    if unknown:
        raise InputError(f"unknown input {unknown[0]!r}: the checkpoint reads {needed}")
    missing = [n for n in needed if n not in inputs]
    if missing:
        raise InputError(
            f"the checkpoint needs inputs {needed}; missing {missing} "
            "(pass each as --input NAME=PATH)"
        )
    return {n: Path(inputs[n]) for n in needed}


def output_files(spec: TaskSpec, output: str | Path) -> dict[str, Path]:
    """Where each output layer is written: ``output`` itself for a one-output task; for
    several, ``<output stem>_<layer name><output suffix>`` beside it (``pred.tif`` ->
    ``pred_dtm.tif``, ``pred_image.tif``)."""
    output = Path(output)
    if len(spec.outputs) == 1:
        return {spec.outputs[0].name: output}
    suffix = output.suffix or ".tif"
    return {la.name: output.with_name(f"{output.stem}_{la.name}{suffix}") for la in spec.outputs}


def _on_grid(stack: contextlib.ExitStack, ds: DatasetReader, grid: DatasetReader, path: Path):
    """``ds`` itself when on ``grid``'s grid, else a bilinear WarpedVRT of it onto that grid."""
    require_crs(ds, path)
    if ds.crs == grid.crs and ds.transform.almost_equals(grid.transform) and ds.shape == grid.shape:
        return ds
    return stack.enter_context(WarpedVRT(
        ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
        resampling=Resampling.bilinear, src_nodata=ds.nodata,
        nodata=ds.nodata if ds.nodata is not None else np.nan,
    ))  # fmt: skip


def predict_scene(
    task,
    inputs: Mapping[str, str | Path] | str | Path,
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
    """Predict every output layer of ``task`` over the scene of its named ``inputs``.

    ``inputs`` maps each input name of ``task.spec`` to a raster (a plain path: the first
    input, the shorthand for one-input tasks); the first input's grid is the output grid and
    its pixel size is checked against the training data's (``any_resolution`` skips that).
    Each output layer is one GeoTIFF (:func:`output_files`: ``out_path`` itself for one
    output) with its channels, then with ``tta`` as many bands of their standard deviation
    across the 8 flips/rotations (``tta_std``). Invalid input pixels are filled before the
    task and written as nodata (-9999), exactly those pixels; no band holds a NaN. A scene
    with no valid pixel raises InputError and writes nothing. ``window`` defaults to
    :func:`default_window`; ``reference`` (a coarse DEM) anchors relative outputs. Returns
    the path of the first output.
    """
    spec = task.spec
    if tta and not spec.dihedral:
        raise InputError(
            "this checkpoint's outputs depend on direction (e.g. the sun of a DEM -> image "
            "model): flipped inputs are no augmentation of it, so --tta is not available"
        )
    paths = resolve_inputs(spec, inputs)
    outs = output_files(spec, out_path)
    task, device, amp_dtype = inference_copy(task, device, precision)
    first = spec.inputs[0].name
    with contextlib.ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache())
        grid = stack.enter_context(open_raster(paths[first]))
        _check_grid(task, grid, paths[first], any_resolution)
        opened, bands = {}, {}
        for la in spec.inputs:
            ds = grid if la.name == first else stack.enter_context(open_raster(paths[la.name]))
            bands[la.name] = band_indices(la, ds, paths[la.name])
            opened[la.name] = ds if la.name == first else _on_grid(stack, ds, grid, paths[la.name])
        reader = _SceneReader(task, opened, bands, device, amp_dtype, tta)
        relative = any(la.relative for la in spec.outputs)
        ref = _Reference(reference, grid) if reference is not None and relative else None
        _predict(task, reader, grid, outs, window=window or default_window(task),
                 overlap=overlap, batch_size=batch_size, tta=tta, ref=ref, cog=cog,
                 progress=progress, source=paths[first])  # fmt: skip
    return outs[spec.outputs[0].name]


def _output_meta(task, layer: LayerSpec, anchored: bool, tta: bool):
    """Band descriptions, units and dataset tags of one output layer's GeoTIFF."""
    names = [layer.name if anchored else f"relative {layer.name}"] if layer.channels == 1 else (
        list(layer.bands))  # fmt: skip
    if tta:
        names += ["tta_std"] if layer.channels == 1 else [f"{b}_tta_std" for b in layer.bands]
    tags = {"demgen_output": layer.name, "units": layer.unit}
    if layer.unit == "reflectance" and task.hparams.get("reflectance_scale"):
        tags["reflectance_scale"] = str(task.hparams.get("reflectance_scale"))
    if layer.unit == "metre":
        tags |= {"demgen_target": layer.name,
                 "heights": "absolute" if anchored else "relative",
                 VERTICAL_CRS_TAG: str(task.hparams.get("vertical_crs") or "unknown")}  # fmt: skip
    return names, [layer.unit] * len(names), tags


def _predict(task, reader, grid, outs, *, window, overlap, batch_size, tta, ref, cog,
             progress, source) -> None:  # fmt: skip
    """Stream blended windows over ``grid`` (an open dataset) into one GeoTIFF per output
    (``outs``: name -> path); InputError naming ``source`` (and no file) when no pixel of it
    is valid."""
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    H, W = grid.height, grid.width
    win = min(window, H, W) if min(H, W) >= reader.spec.window_multiple else window
    stride = max(1, int(round(win * (1 - overlap))))
    rows = list(_window_rows(H, W, win, stride))
    bar = tqdm(total=sum(len(c) for _, c in rows), desc="predict", unit="win",
               disable=not progress)  # fmt: skip
    # A COG is made from a finished GeoTIFF: stage that one beside the output.
    staged = {n: p.with_name(f".{p.name}.stage.tif") if cog else p for n, p in outs.items()}
    try:
        with contextlib.ExitStack() as writers:
            blenders = {}
            for la in reader.spec.outputs:
                lref = ref if la.relative else None
                anchored = not la.relative or lref is not None
                names, units, tags = _output_meta(task, la, anchored, tta)
                integer = la.dtype != "float32"
                profile = geotiff_profile(
                    width=W, height=H, count=len(names), dtype=la.dtype,
                    crs=grid.crs, transform=grid.transform, nodata=0 if integer else NODATA,
                )  # fmt: skip
                writer = open_writer(staged[la.name], profile, descriptions=names, units=units,
                                     tags=tags)  # fmt: skip
                dst = writers.enter_context(writer)
                blenders[la.name] = _Blender(
                    grid, dst, win, la.channels, la.relative, lref, tta, la.dtype
                )
            _run_pipeline(rows, batch_size, blenders, reader, H, bar)
            if next(iter(blenders.values())).n_valid == 0:  # inside the writers: no file
                raise InputError(
                    f"{source}: no valid pixel (every pixel is nodata, masked or not finite)"
                )
        if cog:
            for name, final in outs.items():
                write_cog(staged[name], final)
    finally:
        bar.close()
        if cog:
            for tiff in staged.values():
                tiff.unlink(missing_ok=True)


def _run_pipeline(rows, batch_size, blenders, reader, H, bar) -> None:
    """Predict and blend every window, row by row, with the I/O in a second thread: while
    the model runs on one batch, the thread reads the next one and writes finished rows
    (GDAL decompresses and compresses there; one thread keeps every dataset single-user)."""
    jobs = [
        (ri, r, cols[c0 : c0 + batch_size])
        for ri, (r, cols) in enumerate(rows)
        for c0 in range(0, len(cols), batch_size)
    ]
    lead = next(iter(blenders.values()))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="demgen-io") as io:
        writes = []
        pending = io.submit(reader.load, lead.windows(*jobs[0][1:])) if jobs else None
        for i, (ri, r, cols) in enumerate(jobs):
            loaded = pending.result()
            if i + 1 < len(jobs):
                pending = io.submit(reader.load, lead.windows(*jobs[i + 1][1:]))
            if i == 0 or jobs[i - 1][0] != ri:
                for b in blenders.values():
                    b.start_row(r)
            outs = reader.run(loaded)
            for name, b in blenders.items():
                b.add(r, cols, [o[name] for o in outs])
            bar.update(len(cols))
            if i + 1 == len(jobs) or jobs[i + 1][0] != ri:
                next_r = rows[ri + 1][0] if ri + 1 < len(rows) else H
                for b in blenders.values():
                    values, window = b.finish(next_r)
                    writes.append(io.submit(b.dst.write, values, window=window))
        for w in writes:
            w.result()  # re-raise a failed write


def output_paths(inputs: list[Path], output: Path) -> list[Path]:
    """One output per input: ``output`` itself for one input not naming a folder, else
    ``output/<input stem>_dem.tif``; two inputs with the same stem are an error."""
    if len(inputs) == 1 and not (output.is_dir() or str(output).endswith(("/", "\\"))):
        return [output]
    outs = [output / f"{p.stem}_dem.tif" for p in inputs]
    if len(set(outs)) != len(outs):
        raise InputError("several inputs share a file name; predict them into separate folders")
    return outs
