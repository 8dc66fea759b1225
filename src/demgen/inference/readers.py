"""Window readers of scene prediction: read input windows, mark and fill invalid pixels, run
the network, return heights in metres.

**Invalid input pixels** are those where any band the model reads is not finite (NaN,
inf), equals the file's nodata value, or is masked by a GDAL mask band (an internal or
external ``.msk`` mask, an alpha band; what ``ds.read_masks()`` reports). Before the
network they take the image fill of :func:`demgen.data.fill.image_fill_value` (0 in
normalized units: each band's training mean for ``band-zscore``), the same fill training
uses for the invalid pixels of its chips, so no NaN ever reaches a network and a hole
changes predictions only within the network's receptive field of it. A constant fill is
used rather than an inpainted one because it is the same whatever the window around the
hole. Exactly the invalid pixels are returned as invalid (no dilation); the blender writes
them as nodata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from demgen.data.augment import dihedral, dihedral_inverse
from demgen.data.fill import fill_invalid


@dataclass
class _Window:
    """What a reader returns for one window: heights in metres and where the input is bad."""

    metres: np.ndarray
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


class _ImageReader:
    """Reads image windows and runs an image -> heights task (regression, pix2pix, drpan)."""

    def __init__(self, task, src, band_idx, device, amp_dtype, tta) -> None:
        self.task, self.src, self.band_idx = task, src, band_idx
        self.device, self.amp_dtype, self.tta = device, amp_dtype, tta
        self.norm = task.elevation_norm
        self.relative = bool(task.relative)

    def __call__(self, windows: list[Window]) -> list[_Window]:
        return self.run(self.load(windows))

    def load(self, windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        """Read, normalize and fill a batch of windows (the I/O half, run ahead in a thread):
        the network input (B, C, h, w) and the invalid pixels (B, h, w)."""
        xs, bad = [], []
        for w in windows:
            raw = self.src.read(self.band_idx, window=w)  # nodata compared in the file's dtype
            invalid = invalid_pixels(self.src, self.band_idx, raw, w)
            x = np.asarray(self.task.image_norm.apply(raw.astype(np.float32)), np.float32)
            xs.append(fill_invalid(x, ~invalid[None], self.task.image_fill))
            bad.append(invalid)
        return np.ascontiguousarray(np.stack(xs), dtype=np.float32), np.stack(bad)

    def run(self, loaded: tuple[np.ndarray, np.ndarray]) -> list[_Window]:
        """Predict a loaded batch: heights in metres and invalid pixels per window."""
        x, invalid = loaded
        xt = torch.from_numpy(x).to(self.device)
        z, z_std = _tta_runs(lambda t: self._run(t["image"]), {"image": xt}, self.tta)
        out = []
        for j in range(len(invalid)):
            # Relative (per-chip) models: heights up to an offset the blender decides.
            metres = self.norm.inverse(z[j], 0.0) if self.relative else self.norm.inverse(z[j])
            std = None if z_std is None else z_std[j] * self.norm.metres_per_unit
            out.append(_Window(np.asarray(metres, np.float64), std, invalid[j]))
        return out

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = _pad_to(x, self.task.size_multiple)
        with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
            return self.task(x).float()[:, 0, :h, :w]


class _RefineReader:
    """Reads the named input layers of a refinement task and returns refined heights.

    ``layers`` maps each input name to an open dataset on the output grid: ``ortho1``
    (the image, bands as the checkpoint's), and each extra layer the task stacks. Invalid
    image pixels (see the module docstring) are filled and returned as invalid; an extra
    layer's invalid pixels (non-finite, nodata, masked) are NaN, then 0 with
    ``extra_valid`` False, and invalid in the output unless the layer is a "gaps" layer
    (the initial DSM), whose holes the task fills.
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
        raw = ds.read(band, window=window)
        a = raw.astype(np.float32)
        a[invalid_pixels(ds, [band], raw[None], window)] = np.nan
        return a

    def __call__(self, windows: list[Window]) -> list[_Window]:
        return self.run(self.load(windows))

    def load(self, windows: list[Window]) -> dict[str, np.ndarray]:
        """Read and stack every input layer of a batch of windows (the I/O half)."""
        task = self.task
        needed = {e.get("layer", e["name"]) for e in task.extras} & set(self.layers)
        img_ds = self.layers["ortho1"]
        images, extras, invalid = [], [], []
        for w in windows:
            raw = img_ds.read(self.image_bands, window=w)
            blk = raw.astype(np.float32)
            ext = np.stack([
                self._extra_channel(e, w) if e.get("layer", e["name"]) in needed
                else np.full(blk.shape[1:], np.nan, np.float32)
                for e in task.extras
            ])  # fmt: skip
            bad = invalid_pixels(img_ds, self.image_bands, raw, w)
            # Holes of "gap" layers (the initial DSM) are filled by the task, not masked.
            for i, e in enumerate(task.extras):
                if e.get("layer", e["name"]) in needed and not e.get("gaps", False):
                    bad |= ~np.isfinite(ext[i])
            x = np.asarray(task.image_norm.apply(blk), np.float32)
            images.append(fill_invalid(x, ~bad[None], task.image_fill))
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
        t["extra"] = torch.nan_to_num(t["extra"], nan=0.0, posinf=0.0, neginf=0.0)
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
