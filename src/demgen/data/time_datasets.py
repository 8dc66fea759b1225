"""Torch datasets over a time store (:mod:`demgen.data.timestore`).

:class:`TimePairDataset` serves the pairs of one split, ``(day-0 image, mask at t) -> image
at t``; :class:`TimeFrameDataset` serves single dated chips (image and its mask), what a
building segmentation model trains on (true images only). Both return

- ``image_t0`` / ``target`` (C, H, W) float32: images normalized with the store's training
  statistics, invalid pixels the fill of :func:`demgen.data.fill.image_fill_value`, so no
  NaN reaches a network (a frame item has ``target`` and ``image_t0`` equal);
- ``mask_t0``, ``mask_t`` (1, H, W) float32 0/1;
- ``mask`` (1, H, W) bool: usable at both dates; ``changed`` = ``mask_t & ~mask_t0 & mask``;
- ``gap_days`` () float32 and ``index`` (the pair or frame index).

``augment=True`` applies one joint random flip/rotation (:mod:`demgen.data.augment`) to
every spatial tensor of the item.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from demgen.data.augment import dihedral, draw_code
from demgen.data.fill import fill_invalid, image_fill_value
from demgen.data.timestore import TimeStore

SPATIAL = ("image_t0", "target", "mask_t0", "mask_t", "mask", "changed")


class TimePairDataset(Dataset):
    """Pairs ``(day 0, t)`` of one split of a time store (module docstring)."""

    def __init__(self, store: TimeStore | str, split: str = "train", *, augment: bool = False,
                 seed: int | None = None) -> None:  # fmt: skip
        self.store = store if isinstance(store, TimeStore) else TimeStore(store)
        self.items = self._items(split)
        self.norm = self.store.image_norm
        self.fill = image_fill_value(self.norm)
        self.augment, self.seed = augment, seed

    def _items(self, split: str) -> np.ndarray:
        return self.store.pairs(split)

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, f: int, ok: np.ndarray) -> torch.Tensor:
        x = self.norm.apply(np.asarray(self.store.frames[f], np.float32))
        return torch.from_numpy(fill_invalid(np.asarray(x, np.float32), ok[None], self.fill))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        f0, ft = (int(v) for v in self.items[i])
        s = self.store
        ok = (np.asarray(s.clouds[f0]) == 0) & (np.asarray(s.clouds[ft]) == 0)
        m0 = np.asarray(s.masks[f0], np.float32)[None]
        mt = np.asarray(s.masks[ft], np.float32)[None]
        out = {
            "image_t0": self._image(f0, ok),
            "target": self._image(ft, ok),
            "mask_t0": torch.from_numpy(m0),
            "mask_t": torch.from_numpy(mt),
            "mask": torch.from_numpy(ok[None].copy()),
            "changed": torch.from_numpy((mt > 0) & (m0 == 0) & ok[None]),
            "gap_days": torch.tensor(float(s.days(ft) - s.days(f0)), dtype=torch.float32),
            "index": torch.tensor(i),
        }
        if self.augment:
            rng = None if self.seed is None else np.random.default_rng((self.seed, i))
            code = draw_code(rng)
            for k in SPATIAL:
                out[k] = dihedral(out[k], code).contiguous()
        return out


class TimeFrameDataset(TimePairDataset):
    """Single dated chips of a split (true images and their masks), as pairs of a chip with
    itself: ``image_t0`` = ``target``, ``mask_t0`` = ``mask_t``, ``gap_days`` 0."""

    def __init__(self, store: TimeStore | str, split: str = "train", *, augment: bool = False,
                 seed: int | None = None, min_valid: float = 0.8) -> None:  # fmt: skip
        self.min_valid = min_valid
        super().__init__(store, split, augment=augment, seed=seed)

    def _items(self, split: str) -> np.ndarray:
        f = self.store.frame_indices(split, self.min_valid)
        return np.stack([f, f], axis=1) if f.size else np.zeros((0, 2), np.int64)


__all__ = ["TimeFrameDataset", "TimePairDataset"]
