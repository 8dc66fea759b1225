"""Honest baselines a DEM model must beat, fitted on the training pixels only.

``MeanElevation`` predicts the training-mean height everywhere; ``LinearBands`` is a
per-pixel least-squares fit of height on the image bands (plus an intercept).
"""

from __future__ import annotations

from dataclasses import dataclass

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
