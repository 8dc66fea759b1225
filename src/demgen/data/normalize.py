"""Named, invertible normalizations whose statistics travel inside every checkpoint.

Imagery is scaled to reflectance and standardized per band; elevation is mapped to
[-1, 1] by the training split's min and max (Sat2DEM's "global" strategy), so a
prediction is turned back into metres exactly from the stored numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class ImageNorm:
    """Per-band ``(dn * scale - mean) / std``; ``scale`` turns stored DNs into reflectance."""

    bands: list[str]
    scale: float = 1e-4
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, samples: np.ndarray, bands: list[str], scale: float = 1e-4) -> ImageNorm:
        """Fit per-band mean/std on (bands, N) valid training pixels, in reflectance units."""
        refl = samples.astype(np.float64) * scale
        std = np.maximum(refl.std(axis=1), 1e-6)
        return cls(list(bands), scale, refl.mean(axis=1).tolist(), std.tolist())

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalize a (..., bands, H, W) array or tensor of DNs."""
        mean, std = self._stats(x)
        return (x * self.scale - mean) / std

    def _stats(self, x: Any) -> tuple[Any, Any]:
        shape = (len(self.bands), 1, 1)
        if isinstance(x, torch.Tensor):
            kw = {"dtype": torch.float32, "device": x.device}
            return torch.tensor(self.mean, **kw).view(shape), torch.tensor(self.std, **kw).view(
                shape
            )
        return (
            np.asarray(self.mean, np.float32).reshape(shape),
            np.asarray(self.std, np.float32).reshape(shape),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": "band-zscore", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageNorm:
        return cls(d["bands"], d["scale"], list(d["mean"]), list(d["std"]))


@dataclass
class ElevationNorm:
    """``global``: heights in metres to [-1, 1] by the training split's ``[vmin, vmax]``."""

    vmin: float
    vmax: float
    strategy: str = "global"

    @classmethod
    def fit(cls, heights: np.ndarray) -> ElevationNorm:
        """Fit on finite training heights (metres)."""
        h = heights[np.isfinite(heights)]
        if h.size == 0:
            raise ValueError("no valid heights to fit the elevation normalization")
        lo, hi = float(h.min()), float(h.max())
        if hi - lo < 1e-6:
            hi = lo + 1.0
        return cls(lo, hi)

    @property
    def half_range(self) -> float:
        """Metres per normalized unit: an error of 1.0 normalized is this many metres."""
        return (self.vmax - self.vmin) / 2.0

    def forward(self, h: Any) -> Any:
        """Metres -> normalized."""
        return (h - self.vmin) / self.half_range - 1.0

    def inverse(self, z: Any) -> Any:
        """Normalized -> metres (the exact inverse of :meth:`forward`)."""
        return (z + 1.0) * self.half_range + self.vmin

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElevationNorm:
        if d.get("strategy", "global") != "global":
            raise ValueError(f"unknown elevation normalization {d.get('strategy')!r}")
        return cls(float(d["vmin"]), float(d["vmax"]))
