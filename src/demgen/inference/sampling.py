"""Whole-scene sampling of diffusion checkpoints, window by window, with no seams.

A diffusion checkpoint (``task.spec.diffusion``) draws its output from noise by ``n`` DDIM
steps. Sampling each window on its own would draw a different sample in every window, and
their borders would show. Here all windows of the scene are denoised *together*
(MultiDiffusion, Bar-Tal et al. 2023, "MultiDiffusion: Fusing Diffusion Paths for
Controlled Image Generation", eq. 5): the scene's noisy state ``x_t`` is one array; at
every step each window's denoiser output is computed on its crop of ``x_t`` and the
overlapping outputs are blended with the Hann weight of regression prediction
(:func:`~demgen.inference.blend.blend_weight`) before the scheduler steps the whole scene.
A DDIM step is linear in the model output at a given ``x_t``, so this is the least-squares
agreement of the windows' own steps, and the windows converge on one sample.

**Noise from pixel coordinates.** The starting noise (and the noise of stochastic steps,
``eta > 0``) is :func:`pixel_noise`: a standard normal that is a function of the seed, the
sample and step, the band, and the pixel's scene row and column only (a SplitMix64 hash and
the Box-Muller transform), so the same pixel gets the same noise in every window that
covers it, whatever the window size, batch or device, and ``--seed`` reproduces a scene
bit for bit on the same machine.

**Samples.** ``samples = N`` draws N samples (streams 0..N-1 of the seed) and writes their
mean as the output layer and their per-pixel standard deviation (the sample one, divided
by N - 1; in the layer's units: metres for heights) as ``<output stem>_std.tif`` (float32,
one band per channel). Invalid input pixels are nodata in both, exactly as in regression prediction.

**Memory.** The scene's state is held whole: about ``4 x (3 x target + condition
channels)`` bytes per pixel plus the windows' conditions (1 / (1 - overlap)^2 more), some
200 MB for a 2048 x 2048 image -> DEM scene at 25 % overlap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from demgen.errors import InputError
from demgen.inference.blend import as_stored, blend_weight, window_starts
from demgen.inference.inputs import (
    default_window,
    inference_copy,
    open_inputs,
    output_files,
    output_meta,
    resolve_inputs,
)
from demgen.inference.readers import _autocast, _SceneReader
from demgen.io.raster import NODATA, geotiff_profile, open_writer, write_cog

_MASK64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer (Steele, Lea & Flood 2014), elementwise on uint64 (wrapping)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _key(*parts: int) -> np.uint64:
    """One 64-bit key of a tuple of integers (hash-chained)."""
    k = np.zeros(1, np.uint64)
    for p in parts:
        k = _splitmix64(k ^ np.array([int(p) & _MASK64], np.uint64))
    return k[0]


def pixel_noise(seed: int, stream: tuple[int, ...], channels: int, rows: int, cols: int,
                row0: int = 0, col0: int = 0) -> np.ndarray:  # fmt: skip
    """Standard normal noise (channels, rows, cols) float32 for the scene pixels
    ``[row0, row0 + rows) x [col0, col0 + cols)``: each value a function of ``(seed,
    stream, channel, row, col)`` alone, so any window of the scene gets the same values
    as the scene itself. ``stream`` separates the sample and step noises."""
    r = np.arange(row0, row0 + rows, dtype=np.uint64)[:, None]
    c = np.arange(col0, col0 + cols, dtype=np.uint64)[None, :]
    pix = (r << np.uint64(32)) | c  # (rows, cols): the pixel's scene coordinates
    out = np.empty((channels, rows, cols), np.float32)
    for ch in range(channels):
        h1 = _splitmix64(pix ^ _key(seed, *stream, ch))
        h2 = _splitmix64(h1)
        u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
        u2 = (h2 >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
        out[ch] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out


def std_file(path: Path) -> Path:
    """Where the standard deviation of the samples of output ``path`` goes."""
    return path.with_name(f"{path.stem}_std{path.suffix or '.tif'}")


class _Scene:
    """The windows of a scene, their conditions and inputs (read once), the blend weights."""

    def __init__(self, task, reader: _SceneReader, H: int, W: int, win: int, stride: int,
                 batch_size: int, device: str, amp_dtype) -> None:  # fmt: skip
        self.task, self.device, self.amp = task, device, amp_dtype
        self.win = win
        cols = window_starts(W, win, stride)
        wins = [(r, c) for r in window_starts(H, win, stride) for c in cols]
        self.batches = [wins[i : i + batch_size] for i in range(0, len(wins), batch_size)]
        self.weight = weight = torch.from_numpy(blend_weight(win)).to(device)
        self.wsum = torch.zeros(H, W, device=device)
        self.invalid = np.zeros((H, W), bool)
        self.items = []  # per batch: (condition, inputs, valid)
        for batch in self.batches:
            loaded = reader.load([Window(c, r, win, win) for r, c in batch])
            inputs = {n: torch.from_numpy(a).to(device) for n, a in loaded["inputs"].items()}
            valid = {n: torch.from_numpy(a).to(device) for n, a in loaded["valid"].items()}
            with torch.inference_mode(), _autocast(device, amp_dtype):
                cond = task.condition(inputs, valid).float()
            self.items.append((cond, inputs, valid))
            for (r, c), bad in zip(batch, loaded["invalid"], strict=True):
                self.invalid[r : r + win, c : c + win] |= bad
                self.wsum[r : r + win, c : c + win] += weight

    def crops(self, x: torch.Tensor, batch: list[tuple[int, int]]) -> torch.Tensor:
        w = self.win
        return torch.cat([x[:, :, r : r + w, c : c + w] for r, c in batch])

    def blend(self, acc: torch.Tensor, batch, outs: torch.Tensor) -> None:
        w = self.win
        for k, (r, c) in enumerate(batch):
            acc[0, :, r : r + w, c : c + w] += outs[k].float() * self.weight

    def model_output(self, x: torch.Tensor, t: int, guidance: float | None,
                     attrs: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The blended denoiser output over the scene at step ``t`` (1, T, H, W); ``attrs``
        (1, A) the same for every window."""
        acc = torch.zeros_like(x)
        for batch, (cond, _, _) in zip(self.batches, self.items, strict=True):
            a = None if attrs is None else attrs.expand(len(batch), -1)
            with torch.inference_mode(), _autocast(self.device, self.amp):
                out = self.task.denoise(self.crops(x, batch), t, cond, guidance, a)
            self.blend(acc, batch, out)
        return acc / self.wsum

    def decode(self, x0: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """The sample ``x0`` (diffusion space) -> each output layer in its units, window by
        window (the host's ``decode``), blended (1, C, H, W)."""
        H, W = x0.shape[-2:]
        accs = {la.name: torch.zeros(1, la.channels, H, W, device=x0.device) for la in layers}
        for batch, (cond, inputs, valid) in zip(self.batches, self.items, strict=True):
            with torch.inference_mode():
                y = self.task.from_x0(self.crops(x0, batch), cond)
                out = self.task.decode(y, inputs, valid)
            for la in layers:
                self.blend(accs[la.name], batch, out[la.name])
        return {n: a / self.wsum for n, a in accs.items()}


def sample_scene(
    task,
    inputs: Mapping[str, str | Path] | str | Path,
    out_path: str | Path,
    *,
    window: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    seed: int = 0,
    samples: int = 1,
    attributes: dict[str, float] | None = None,
    precision: str = "auto",
    device: str | None = None,
    cog: bool = False,
    any_resolution: bool = False,
    progress: bool = True,
) -> Path:
    """Sample every output layer of a diffusion ``task`` over a whole scene (module
    docstring): ``steps`` DDIM steps (default: the checkpoint's ``sample_steps``), guidance
    scale ``guidance`` and ``eta`` (defaults: the checkpoint's), starting noise from
    :func:`pixel_noise` of ``seed``; ``samples`` samples averaged, their spread written
    beside the output (:func:`std_file`) when more than one; ``attributes`` (name -> value,
    all the checkpoint was trained with, or none) what to draw (:mod:`demgen.tasks.attributes`:
    e.g. ``{"snow": 0.8, ...}``). Inputs, outputs, nodata and
    georeferencing as :func:`~demgen.inference.scene.predict_scene`. Returns the path of the
    first output."""
    spec = task.spec
    if not spec.diffusion:
        raise InputError("sample_scene is for diffusion checkpoints; use predict_scene")
    if samples < 1:
        raise InputError(f"samples must be >= 1, got {samples}")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    paths = resolve_inputs(spec, inputs)
    outs = output_files(spec, out_path)
    task, device, amp_dtype = inference_copy(task, device, precision)
    try:
        sched = task.sampler(steps, eta)
        attrs = task.attribute_tensor(attributes, 1, device)
    except ValueError as exc:  # steps out of 1..T, a negative eta, unknown attributes
        raise InputError(str(exc)) from exc
    with contextlib.ExitStack() as stack:
        grid, opened, bands = open_inputs(stack, task, paths, any_resolution)
        reader = _SceneReader(task, opened, bands, device, amp_dtype, tta=False)
        H, W = grid.height, grid.width
        win = min(window or default_window(task), H, W)
        stride = max(1, int(round(win * (1 - overlap))))
        scene = _Scene(task, reader, H, W, win, stride, batch_size, device, amp_dtype)
        if scene.invalid.all():
            raise InputError(f"{paths[spec.inputs[0].name]}: no valid pixel (every pixel is "
                             "nodata, masked or not finite)")  # fmt: skip
        T = task.target_channels
        mean = {la.name: None for la in spec.outputs}
        m2 = dict(mean)
        bar = tqdm(total=samples * len(sched.timesteps), desc="sample", unit="step",
                   disable=not progress)  # fmt: skip
        try:
            for s in range(samples):
                _sample(scene, sched, seed, s, (T, H, W), guidance, attrs, bar, mean, m2, spec)
        finally:
            bar.close()
        for la in spec.outputs:
            std = np.sqrt(m2[la.name] / (samples - 1)) if samples > 1 else None
            _write(task, la, grid, outs[la.name], mean[la.name], std, scene.invalid, cog)
    return outs[spec.outputs[0].name]


@torch.inference_mode()
def _sample(scene, sched, seed, s, shape, guidance, attrs, bar, mean, m2, spec) -> None:
    """Draw sample ``s`` of the scene; fold its decoded layers into the running ``mean`` and
    sum of squared deviations ``m2`` (Welford, float64)."""
    device = scene.device
    x = torch.from_numpy(pixel_noise(seed, (0, s), *shape))[None].to(device)
    for i, t in enumerate(sched.timesteps):
        out = scene.model_output(x, int(t), guidance, attrs)
        z = None
        if sched.eta > 0:  # the step's own noise, from pixel coordinates too
            z = torch.from_numpy(pixel_noise(seed, (1, s, i), *shape))[None].to(device)
        x = sched.step(out, int(t), x, variance_noise=z).prev_sample
        bar.update(1)
    for name, v in scene.decode(x, spec.outputs).items():
        v = v[0].double().cpu().numpy()
        if mean[name] is None:
            mean[name], m2[name] = v, np.zeros_like(v)
        else:
            d = v - mean[name]
            mean[name] += d / (s + 1)
            m2[name] += d * (v - mean[name])


def _write(task, layer, grid, path: Path, values: np.ndarray, std: np.ndarray | None,
           invalid: np.ndarray, cog: bool) -> None:  # fmt: skip
    """One output layer (and its ``_std`` file), nodata where ``invalid`` or not finite,
    each appearing only when complete (staged for a COG)."""
    bad = invalid | ~np.all(np.isfinite(values), axis=0)
    names, units, tags = output_meta(task, layer, True, False)
    tags = {**tags, "demgen_sampler": "ddim", "demgen_samples_mean": "true"}
    files = []
    if std is not None:  # first: a rerun that finds the mean finds its spread too
        std_names = [f"{n}_std" for n in (layer.bands if layer.channels > 1 else [layer.name])]
        files.append((std_file(path), std, "float32", std_names, [layer.unit] * layer.channels))
    files.append((path, values, layer.dtype, names, units))
    for dst, a, dtype, desc, unit in files:
        dt = np.dtype(dtype)
        a = as_stored(a, bad, dt)
        nodata = 0 if dt.kind == "u" else NODATA
        profile = geotiff_profile(width=grid.width, height=grid.height, count=a.shape[0],
                                  dtype=dt, crs=grid.crs, transform=grid.transform,
                                  nodata=nodata)  # fmt: skip
        staged = dst.with_name(f".{dst.name}.stage.tif") if cog else dst
        try:
            with open_writer(staged, profile, descriptions=desc, units=unit, tags=tags) as out:
                out.write(a)
            if cog:
                write_cog(staged, dst)
        finally:
            if cog:
                staged.unlink(missing_ok=True)


__all__ = ["pixel_noise", "sample_scene", "std_file"]
