"""Chips of a store as a torch dataset: normalized tensors, named input and target layers,
reproducible augmentation (:class:`ChipDataset`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from demgen.data.augment import SPATIAL_KEYS, dihedral, draw_code
from demgen.data.fill import fill_invalid, image_fill_value
from demgen.data.store import ChipStore
from demgen.errors import InputError


class ChipDataset(Dataset):
    """Normalized chips of one split: ``dict(image, target, mask, offset, index)`` tensors.

    ``image`` (C, H, W) float32 and ``target`` (1, H, W) float32 are normalized with the
    store's (or fold's) training statistics; ``mask`` (1, H, W) bool marks valid pixels (the
    target is 0 where it is False: losses and metrics must ignore those). The store keeps
    one mask for image and heights, and chips may keep up to ``--max-invalid`` invalid
    pixels whose stored image values are NaN or a nodata value: every image value where
    ``mask`` is False, or that is not finite, is replaced by :func:`image_fill_value` (the
    fill prediction uses for invalid input pixels), so no NaN reaches a network and what
    invalid pixels held changes nothing. ``offset`` is the
    chip's offset in metres for per-chip strategies, so ``norm.inverse(target, offset)``
    gives metres. ``augment=True`` applies a joint random flip/rotation (one of the 8 of
    :mod:`demgen.data.augment`), reproducible from ``seed``, the epoch (:meth:`set_epoch`)
    and the index; with ``seed=None`` it is drawn from torch's RNG instead (new every epoch,
    in every DataLoader worker, and governed by ``torch.manual_seed``/``seed_everything``).
    ``defer_augment=True`` only draws it, as ``aug`` (the code), for
    :func:`demgen.data.augment.apply_batch` to apply to the whole batch on its device.
    ``extra=True`` adds ``extra`` (E, H, W) float32: the store's extra layers as stored
    (heights in metres, see :attr:`ChipStore.extras`), 0 where ``mask`` is False so no NaN
    reaches a network, and ``extra_valid`` (E, H, W) bool, False there and in a layer's own
    gaps (``--extra-gaps``, e.g. the holes of an initial DSM, also 0 in ``extra``).

    **Named roles.** ``inputs`` and ``targets`` (layer names of :attr:`ChipStore.layers`)
    choose what is learnt from what: with either given, ``input`` is the input layers stacked
    (C_in, H, W) and ``target`` the target layers stacked (C_out, H, W), each layer as
    :meth:`layer_tensor` serves it (``image`` and ``elevation`` normalized with the stored
    statistics, the image filled and the heights 0 where invalid). Defaults: inputs ``image``,
    targets ``elevation``, so ``target`` is then what it always was; without either, no
    ``input`` key is added (today's batch, unchanged). The other keys stay.
    """

    def __init__(
        self,
        store: ChipStore | str | Path,
        split: str = "train",
        *,
        fold: int | None = None,
        augment: bool = False,
        seed: int | None = 0,
        extra: bool = False,
        defer_augment: bool = False,
        inputs: list[str] | None = None,
        targets: list[str] | None = None,
    ) -> None:
        self.store = store if isinstance(store, ChipStore) else ChipStore(store)
        self.named = inputs is not None or targets is not None
        self.inputs = list(inputs) if inputs is not None else ["image"]
        self.targets = list(targets) if targets is not None else ["elevation"]
        unknown = [n for n in self.inputs + self.targets if n not in self.store.layers]
        if unknown:
            raise InputError(f"{self.store.path}: no layer {unknown[0]!r} "
                             f"(layers: {', '.join(self.store.layers)})")  # fmt: skip
        self.idx = self.store.indices(split, fold)
        self.image_norm = self.store.image_norm(fold)
        self.elevation_norm = self.store.elevation_norm(fold)
        self.offsets = self.store.offsets(self.elevation_norm)
        self.fill = image_fill_value(self.image_norm)
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.defer_augment = defer_augment
        self.with_extra = extra and self.store.extra is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.idx[i])
        s = self.store
        arrs = [np.array(s.image[j]), np.array(s.elevation[j]), np.array(s.mask[j])]
        if self.with_extra:
            arrs.append(np.array(s.extra[j]))
        img, hgt, val = arrs[:3]
        off = float(self.offsets[j]) if np.isfinite(self.offsets[j]) else 0.0
        x = self.image_norm.apply(img.astype(np.float32))
        x = fill_invalid(np.asarray(x, np.float32), val[None], self.fill)
        y = self.elevation_norm.forward(hgt.astype(np.float64), off)
        y = np.where(val, y, 0.0).astype(np.float32)
        out = {
            "image": torch.from_numpy(np.asarray(x, np.float32)),
            "target": torch.from_numpy(y)[None],
            "mask": torch.from_numpy(np.ascontiguousarray(val))[None],
            "offset": torch.tensor(off, dtype=torch.float64),
            "index": torch.tensor(j),
        }
        if self.with_extra:
            ok = val[None] & np.isfinite(arrs[3])
            out["extra"] = torch.from_numpy(np.where(ok, arrs[3], 0.0).astype(np.float32))
            out["extra_valid"] = torch.from_numpy(ok)
        if self.named:
            served = {"image": out["image"], "elevation": out["target"]}
            out["input"] = torch.cat([self.layer_tensor(n, j, val, served) for n in self.inputs])
            out["target"] = torch.cat([self.layer_tensor(n, j, val, served)
                                       for n in self.targets])  # fmt: skip
        if self.augment:
            rng = None if self.seed is None else np.random.default_rng((self.seed, self.epoch, j))
            code = draw_code(rng)
            if self.defer_augment:  # applied to the whole batch by the data module
                out["aug"] = torch.tensor(code)
            else:
                for k in (*SPATIAL_KEYS, "input"):
                    if k in out:
                        out[k] = dihedral(out[k], code).contiguous()
        return out

    def layer_tensor(
        self, name: str, j: int, valid: np.ndarray, served: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Layer ``name`` of chip ``j`` as a (C, H, W) float32 tensor: ``image`` and
        ``elevation`` as the dataset normalizes them (``served``), ``mask`` as 0/1, any other
        layer as stored (extras: heights in metres) with 0 where ``valid`` is False or the
        value is not finite."""
        if name in served:
            return served[name]
        if name == "mask":
            return torch.from_numpy(valid[None].astype(np.float32))
        a = self.store.read_layer(name, j).astype(np.float32)
        return torch.from_numpy(np.where(valid[None] & np.isfinite(a), a, 0.0).astype(np.float32))
