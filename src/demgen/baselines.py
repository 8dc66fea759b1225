"""Honest baselines a DEM model must beat, fitted on the training pixels only.

``MeanElevation`` predicts the training-mean height everywhere; ``LinearBands`` is a
per-pixel least-squares fit of height on the image bands (plus an intercept).
:func:`fit_baselines` fits both on the valid pixels of a chip store's training split, the
chips a model trained on that store saw, with the image in the store's stored units (what a
scene's ``image.tif`` holds), so they score on a held-out scene beside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class MeanElevation:
    """Predict one constant: the mean training height in metres."""

    mean_m: float = 0.0

    def fit(self, heights: np.ndarray) -> MeanElevation:
        self.mean_m = float(np.mean(heights))
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        return np.full(image.shape[-2:], self.mean_m, np.float32)


@dataclass
class LinearBands:
    """Height = w . bands + b, fitted by least squares on (N, bands) training pixels."""

    coef: np.ndarray | None = None

    def fit(self, pixels: np.ndarray, heights: np.ndarray) -> LinearBands:
        a = np.column_stack([pixels.astype(np.float64), np.ones(len(pixels))])
        self.coef, *_ = np.linalg.lstsq(a, heights.astype(np.float64), rcond=None)
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("LinearBands.predict called before fit")
        b = image.shape[0]
        flat = image.reshape(b, -1).T.astype(np.float64)
        out = flat @ self.coef[:b] + self.coef[b]
        return out.reshape(image.shape[-2:]).astype(np.float32)


def fit_baselines(
    store_path: str | Path, *, max_pixels: int = 400_000, seed: int = 0
) -> tuple[MeanElevation, LinearBands]:
    """Both baselines fitted on the valid pixels of the store's ``train`` split.

    The mean is over every valid training pixel; the regression over a random sample of at
    most ``max_pixels`` of them (least squares on 5 unknowns needs no more).
    """
    from demgen.data.chips import ChipStore

    store = ChipStore(store_path)
    idx = store.indices("train")
    if idx.size == 0:
        raise ValueError(f"{store_path}: the training split is empty")
    rng = np.random.default_rng(seed)
    total, count = 0.0, 0
    pix, hts = [], []
    per_chip = max(1, max_pixels // idx.size)
    for j in idx:
        valid = np.asarray(store.mask[j], bool) & np.isfinite(store.elevation[j])
        heights = np.asarray(store.elevation[j], np.float64)[valid]
        total, count = total + float(heights.sum()), count + heights.size
        flat = np.flatnonzero(valid.ravel())
        take = rng.choice(flat, size=min(per_chip, flat.size), replace=False)
        image = np.asarray(store.image[j])
        pix.append(image.reshape(image.shape[0], -1)[:, take].T)
        hts.append(np.asarray(store.elevation[j]).ravel()[take])
    if count == 0:
        raise ValueError(f"{store_path}: no valid training pixel")
    mean = MeanElevation(total / count)
    return mean, LinearBands().fit(np.concatenate(pix), np.concatenate(hts))
