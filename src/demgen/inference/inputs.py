"""What every scene prediction does before and after its windows: the named inputs found,
opened on one grid and checked, an inference copy of the task, the output files and their
metadata. :func:`~demgen.inference.scene.predict_scene` (one pass a window) and
:func:`~demgen.inference.sampling.sample_scene` (diffusion: every window every step) share
them.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling

from demgen.errors import InputError
from demgen.inference.readers import band_indices
from demgen.io.geodesy import VERTICAL_CRS_TAG
from demgen.io.raster import bounded_gdal_cache, open_raster, pixel_size_metres, require_crs
from demgen.models.fusion import fuse_conv_bn
from demgen.precision import autocast_dtype, default_device, resolve_precision
from demgen.tasks.spec import LayerSpec, TaskSpec

RESOLUTION_TOLERANCE = 0.02  # relative pixel-size mismatch accepted without --any-resolution


def default_window(task) -> int:
    """The window side (px) used when none is given: the task's ``spec.window`` (the training
    chip size for relative models and refinement, else twice it)."""
    return int(task.spec.window)


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


def open_inputs(stack: contextlib.ExitStack, task, paths: dict[str, Path],
                any_resolution: bool = False) -> tuple[DatasetReader, dict, dict]:  # fmt: skip
    """Open every input of ``task.spec`` (``paths`` from :func:`resolve_inputs`) inside
    ``stack`` with a bounded GDAL cache: the grid (first) input, checked for a CRS and the
    training pixel size; the others on its grid (warped where they are not). Returns (grid,
    {name: dataset on the grid}, {name: 1-based bands})."""
    spec = task.spec
    first = spec.inputs[0].name
    stack.enter_context(bounded_gdal_cache())
    grid = stack.enter_context(open_raster(paths[first]))
    _check_grid(task, grid, paths[first], any_resolution)
    opened, bands = {}, {}
    for la in spec.inputs:
        ds = grid if la.name == first else stack.enter_context(open_raster(paths[la.name]))
        bands[la.name] = band_indices(la, ds, paths[la.name])
        opened[la.name] = ds if la.name == first else _on_grid(stack, ds, grid, paths[la.name])
    return grid, opened, bands


def output_meta(task, layer: LayerSpec, anchored: bool, tta: bool):
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


__all__ = [
    "default_window",
    "inference_copy",
    "open_inputs",
    "output_files",
    "output_meta",
    "resolve_inputs",
]
