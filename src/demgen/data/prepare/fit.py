"""Normalizations of a chip store, fitted on its training split only.

The per-chip height statistics and pixel samples gathered while chipping go in; the
elevation and image normalizations (:mod:`demgen.data.normalize`) of the store (and of each
fold) come out, as plain data for the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from demgen.data.normalize import (
    ChipStats,
    fit_elevation_norm,
    fit_image_norm,
)
from demgen.data.prepare.config import PrepareConfig
from demgen.errors import InputError


def chip_stats(chips: list[dict[str, Any]]) -> ChipStats:
    """The stored chips' height statistics (``z`` of each chip entry; null as NaN)."""
    z = np.array([[np.nan if v is None else v for v in c["z"]] for c in chips], np.float64)
    return ChipStats(z[:, 0], z[:, 1], z[:, 2], z[:, 3], z[:, 4])


def fit_normalizations(
    cfg: PrepareConfig,
    train: list[int],
    stats: ChipStats,
    samples: list[np.ndarray],
    bands: list[str],
    dtype: str,
) -> dict[str, Any]:
    """The image and elevation normalizations fitted on the chips ``train`` (indices)."""
    if not train:
        raise InputError("no training chips left after splitting (use more data or --block 1)")
    elev = fit_elevation_norm(cfg.normalize, stats.subset(train), cfg.chip_size)
    pix = np.concatenate([samples[i] for i in train], axis=1).astype(np.float64)
    img = fit_image_norm(cfg.image_normalize, pix, bands, scale=cfg.image_scale, dtype=dtype)
    return {
        "image": img.to_dict(),
        "elevation": elev.to_dict(),
        "fitted_on": "train",
        "train_chips": len(train),
    }
