"""Joint geometric augmentation on tensors: the 8 flips/rotations of the square.

Image, heights, masks and extra layers of a chip are turned and flipped alike. Datasets
only *draw* each chip's transform (a code 0..7, :func:`draw_code`) and return it as
``batch["aug"]``; :func:`apply_batch` then transforms the whole batch on its device after
the transfer (``on_after_batch_transfer`` of the data modules), so the copies run as a few
batched tensor ops, on the GPU when there is one, instead of per chip in the workers.
Test-time augmentation (:mod:`demgen.inference.scene`) uses the same group.
"""

from __future__ import annotations

import numpy as np
import torch

#: batch keys holding (B, C, H, W) layers that are transformed together
SPATIAL_KEYS = ("image", "target", "mask", "extra", "extra_valid")


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations of the square's symmetry group (k in 0..7):
    a flip of the last axis when k >= 4, then k % 4 quarter turns of the last two axes."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` with the same k."""
    if k % 4:
        x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def draw_code(rng: np.random.Generator | None = None) -> int:
    """A uniformly random transform code (0..7): from ``rng``, else from torch's RNG (so it
    follows ``torch.manual_seed`` / ``seed_everything`` and differs between workers)."""
    if rng is None:
        return int(torch.randint(8, ()))
    return int(rng.integers(8))


def apply_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply each chip's transform ``batch["aug"]`` (B,) to every spatial layer of the batch
    (one batched op per distinct code), and drop ``aug``. Batches without it pass as they
    are. Chips must be square for quarter turns."""
    codes = batch.pop("aug", None)
    if codes is None:
        return batch
    codes = codes.to("cpu", torch.int64)
    present = [k for k in SPATIAL_KEYS if k in batch]
    if any(batch[k].shape[-1] != batch[k].shape[-2] for k in present):
        raise ValueError("rotation augmentation needs square chips")
    out = dict(batch)
    for key in present:
        t = batch[key]
        res = torch.empty_like(t, memory_format=torch.contiguous_format)
        for code in torch.unique(codes).tolist():
            idx = torch.nonzero(codes == code).flatten().to(t.device)
            res[idx] = dihedral(t.index_select(0, idx), int(code))
        out[key] = res
    return out
