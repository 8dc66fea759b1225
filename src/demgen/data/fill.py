"""The fill of invalid image pixels, shared by training and prediction.

Invalid image pixels (NaN/inf, nodata, masked, or marked invalid by a chip's mask) must
never reach a network: they take a constant in normalized units, :func:`image_fill_value`,
the same in :class:`~demgen.data.chips.ChipDataset`, in the tasks
(:meth:`~demgen.tasks.common.DEMTask.clean_batch`) and in scene prediction
(:mod:`demgen.inference.readers`), so the network learns what the fill means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Normalized value given to invalid image pixels, per image normalization strategy.
#: ``band-zscore``: 0 is each band's training mean; ``percentile``: 0.5 is halfway between
#: the training 2nd and 98th percentiles (a stand-in for the median); ``scale`` has no
#: statistics and 0 is zero reflectance.
IMAGE_FILL = {"band-zscore": 0.0, "percentile": 0.5, "scale": 0.0}


def image_fill_value(norm: Any) -> float:
    """The normalized value invalid image pixels take before any network sees them.

    A constant in normalized units, the same in training (:class:`ChipDataset`, the tasks)
    and in prediction (:mod:`demgen.inference.readers`), so the network learns what the
    fill means and a hole changes predictions only within the network's receptive field
    of it. A constant is preferred to an inpainted fill because it is identical whatever
    the window or chip around the hole (inpainting would make a pixel's input depend on
    how the scene is cut into windows) and costs nothing. See :data:`IMAGE_FILL`.
    """
    strategy = norm.to_dict().get("strategy", "band-zscore")
    return IMAGE_FILL.get(strategy, 0.0)


def fill_invalid(x: Any, valid: Any, value: float) -> Any:
    """``x`` (C, H, W) or (B, C, H, W), numpy or torch, with ``value`` wherever ``valid``
    (broadcast over channels) is False or ``x`` is not finite: no NaN/inf ever passes."""
    if isinstance(x, torch.Tensor):
        ok = torch.isfinite(x) & valid.bool()
        return torch.where(ok, x, torch.tensor(value, dtype=x.dtype, device=x.device))
    return np.where(np.isfinite(x) & np.asarray(valid, bool), x, np.asarray(value, x.dtype))


__all__ = ["IMAGE_FILL", "fill_invalid", "image_fill_value"]
