"""The window reader of scene prediction, for every task: read each named input layer's
window, mark and fill its invalid pixels, run ``task.predict_batch`` (with TTA), return each
output layer in its unit.

**Bands** of a layer (:class:`~demgen.tasks.spec.LayerSpec`) are found by band description
(:func:`band_indices`); a single-channel layer reads band 1 of a single-band raster, and a
raster without any band description is read in order when its band count is the layer's.

**Invalid input pixels** are those where any band a layer reads is not finite (NaN, inf),
equals the file's nodata value, or is masked by a GDAL mask band (an internal or external
``.msk`` mask, an alpha band; what ``ds.read_masks()`` reports). Before the task they take
the task's fill for the layer (``task.fill_values``: for an image, the stored value that
normalizes to :func:`demgen.data.fill.image_fill_value`, the fill training uses for the
invalid pixels of its chips, so no NaN ever reaches a network and a hole changes
predictions only within the network's receptive field of it; the task applies the
normalized fill again where ``valid`` is False, so the numbers are exactly training's). A
constant fill is used rather than an inpainted one because it is the same whatever the
window around the hole. A window's output pixels are invalid exactly where any input layer
without ``gaps`` is invalid (no dilation); the blender writes them as nodata.

**TTA** runs the task on the 8 flips/rotations of every input (and validity) and undoes
each on every output: the mean is the output, the standard deviation its spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from demgen.data.augment import dihedral, dihedral_inverse
from demgen.errors import InputError
from demgen.io.raster import band_names
from demgen.tasks.spec import LayerSpec


@dataclass
class _Window:
    """One output layer of one window: values (C, h, w) in the layer's unit, their TTA
    standard deviation (C, h, w) or None, and where the inputs are invalid (h, w)."""

    values: np.ndarray
    std: np.ndarray | None
    invalid: np.ndarray


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


def has_mask_band(ds, bands: list[int]) -> bool:
    """Whether any of ``bands`` (1-based) has a real GDAL mask (internal/external mask,
    alpha), i.e. one not implied by "all valid" or by the nodata value."""
    flags = ds.mask_flag_enums
    return any(
        MaskFlags.all_valid not in flags[b - 1] and MaskFlags.nodata not in flags[b - 1]
        for b in bands
    )


def invalid_pixels(ds, bands: list[int], block: np.ndarray, window: Window) -> np.ndarray:
    """(h, w) bool: True where any of ``bands`` of ``block`` (read from ``ds`` at ``window``)
    is not finite, equals that band's nodata value, or is masked by a GDAL mask band."""
    bad = ~np.all(np.isfinite(block), axis=0)
    for k, b in enumerate(bands):
        nd = ds.nodatavals[b - 1]
        if nd is not None and np.isfinite(nd):
            bad |= block[k] == nd
    if has_mask_band(ds, bands):
        bad |= np.any(ds.read_masks(bands, window=window) == 0, axis=0)
    return bad


def band_indices(layer: LayerSpec, ds, path: str | Path) -> list[int]:
    """1-based indices of ``layer``'s bands in ``ds``: matched by band description; band 1
    of a single-band raster for a single-channel layer; in order for a raster whose bands
    have no description and whose count is the layer's. InputError naming what is missing."""
    names = band_names(ds)
    if all(b in names for b in layer.bands):
        return [names.index(b) + 1 for b in layer.bands]
    undescribed = not any(ds.descriptions)
    if ds.count == layer.channels and (layer.channels == 1 or undescribed):
        return list(range(1, layer.channels + 1))
    missing = [b for b in layer.bands if b not in names]
    raise InputError(
        f"{path}: bands {missing} required by the model's input {layer.name!r} are not in "
        f"the raster (it has {names})"
    )


class _SceneReader:
    """Reads every input layer of a task window by window and runs ``task.predict_batch``.

    ``layers`` maps each input name of ``task.spec`` to an open dataset on the output grid and
    ``bands`` to the 1-based bands read from it.
    """

    def __init__(self, task, layers, bands, device, amp_dtype, tta) -> None:
        self.task, self.layers, self.bands = task, layers, bands
        self.device, self.amp_dtype, self.tta = device, amp_dtype, tta
        self.spec = task.spec
        self.fills = {
            la.name: np.asarray(task.fill_values(la.name), np.float32).reshape(-1, 1, 1)
            for la in self.spec.inputs
        }

    def __call__(self, windows: list[Window]) -> list[dict[str, _Window]]:
        return self.run(self.load(windows))

    def load(self, windows: list[Window]) -> dict[str, dict[str, np.ndarray] | np.ndarray]:
        """Read and fill a batch of windows (the I/O half, run ahead in a thread): each input
        (B, C, h, w) in its unit, its validity (B, 1, h, w) and the output's invalid pixels."""
        inputs: dict[str, list[np.ndarray]] = {la.name: [] for la in self.spec.inputs}
        valid: dict[str, list[np.ndarray]] = {la.name: [] for la in self.spec.inputs}
        invalid = []
        for w in windows:
            bad_out = np.zeros((int(w.height), int(w.width)), bool)
            for la in self.spec.inputs:
                ds, idx = self.layers[la.name], self.bands[la.name]
                raw = ds.read(idx, window=w)  # nodata compared in the file's dtype
                bad = invalid_pixels(ds, idx, raw, w)
                x = raw.astype(np.float32)
                inputs[la.name].append(
                    np.where(bad[None] | ~np.isfinite(x), self.fills[la.name], x)
                )
                valid[la.name].append(~bad[None])
                if not la.gaps:
                    bad_out |= bad
            invalid.append(bad_out)
        return {
            "inputs": {n: np.ascontiguousarray(np.stack(v), np.float32) for n, v in inputs.items()},
            "valid": {n: np.stack(v) for n, v in valid.items()},
            "invalid": np.stack(invalid),
        }

    def run(self, loaded) -> list[dict[str, _Window]]:
        """Predict a loaded batch: each output layer, per window, in its unit."""
        dev = self.device
        inputs = {n: torch.from_numpy(a).to(dev) for n, a in loaded["inputs"].items()}
        valid = {n: torch.from_numpy(a).to(dev) for n, a in loaded["valid"].items()}
        if not self.tta:
            mean, std = {k: v.double() for k, v in self._run(inputs, valid).items()}, None
        else:
            runs = []
            for k in range(8):
                out = self._run({n: dihedral(t, k) for n, t in inputs.items()},
                                {n: dihedral(t, k) for n, t in valid.items()})  # fmt: skip
                runs.append({n: dihedral_inverse(t, k).double() for n, t in out.items()})
            stacks = {n: torch.stack([r[n] for r in runs]) for n in runs[0]}
            mean = {n: s.mean(dim=0) for n, s in stacks.items()}
            std = {n: s.std(dim=0, unbiased=False) for n, s in stacks.items()}
        invalid = loaded["invalid"]
        mean_np = {n: t.cpu().numpy() for n, t in mean.items()}
        std_np = None if std is None else {n: t.cpu().numpy() for n, t in std.items()}
        return [
            {
                n: _Window(mean_np[n][j], None if std_np is None else std_np[n][j], invalid[j])
                for n in mean_np
            }
            for j in range(len(invalid))
        ]

    def _run(self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]):
        """``predict_batch`` on inputs reflect-padded to the window multiple, cropped back."""
        h, w = next(iter(inputs.values())).shape[-2:]
        m = self.spec.window_multiple
        if h % m or w % m:
            inputs = {n: _pad_to(t, m)[0] for n, t in inputs.items()}
            valid = {n: _pad_to(t.float(), m)[0] > 0.5 for n, t in valid.items()}
        with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
            out = self.task.predict_batch(inputs, valid)
        return {n: t.float()[..., :h, :w] for n, t in out.items()}
