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
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from demgen.errors import InputError
from demgen.inference.blend import _Blender, _Reference, blend_weight, window_starts
from demgen.inference.inputs import (
    default_window,
    inference_copy,
    open_inputs,
    output_files,
    output_meta,
    resolve_inputs,
)
from demgen.inference.readers import _SceneReader
from demgen.inference.sampling import sample_scene
from demgen.io.raster import NODATA, geotiff_profile, open_writer, write_cog
from demgen.tasks.registry import load_task  # re-exported: loading lives with the tasks

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


def _window_rows(
    height: int, width: int, window: int, stride: int
) -> Iterator[tuple[int, list[int]]]:
    cols = window_starts(width, window, stride)
    for r in window_starts(height, window, stride):
        yield r, cols


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
    seed: int = 0,
    samples: int = 1,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    attributes: dict[str, float] | None = None,
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

    A diffusion checkpoint (``spec.diffusion``) is sampled over the whole scene at once by
    :func:`demgen.inference.sampling.sample_scene` with ``seed``, ``samples`` (their mean,
    and a ``_std`` file of their spread), ``steps``, ``guidance``, ``eta`` and
    ``attributes``; other tasks take none of those.
    """
    spec = task.spec
    if spec.diffusion:
        if tta or reference is not None:
            raise InputError("--tta and --reference are not for diffusion checkpoints "
                             "(--samples N gives the spread of N samples)")  # fmt: skip
        return sample_scene(task, inputs, out_path, window=window, overlap=overlap,
                            batch_size=batch_size, precision=precision, device=device,
                            cog=cog, any_resolution=any_resolution, progress=progress,
                            seed=seed, samples=samples, steps=steps, guidance=guidance,
                            eta=eta, attributes=attributes)  # fmt: skip
    if samples != 1 or attributes or any(v is not None for v in (steps, guidance, eta)):
        raise InputError("--samples, --steps, --guidance, --eta and --attribute are for diffusion "
                         "checkpoints; this one predicts in one pass")  # fmt: skip
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
        grid, opened, bands = open_inputs(stack, task, paths, any_resolution)
        reader = _SceneReader(task, opened, bands, device, amp_dtype, tta)
        relative = any(la.relative for la in spec.outputs)
        ref = _Reference(reference, grid) if reference is not None and relative else None
        _predict(task, reader, grid, outs, window=window or default_window(task),
                 overlap=overlap, batch_size=batch_size, tta=tta, ref=ref, cog=cog,
                 progress=progress, source=paths[first])  # fmt: skip
    return outs[spec.outputs[0].name]


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
                names, units, tags = output_meta(task, la, anchored, tta)
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
