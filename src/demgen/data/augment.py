"""Joint geometric augmentation: image, heights and masks turned and flipped alike."""

from __future__ import annotations

import numpy as np


def rot_flip(arrs: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    """The same rotation by k*90 degrees and optional flip for every (..., H, W) array."""
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out
