"""Named, invertible normalizations whose statistics travel inside every checkpoint.

Imagery strategies (``apply`` maps stored values to network inputs, ``inverse`` back):

- ``band-zscore`` (:class:`ImageNorm`): ``(dn * scale - mean) / std`` per band;
- ``percentile`` (:class:`PercentileImageNorm`): per-band stretch ``(x - p_lo) / (p_hi - p_lo)``
  by the training split's low and high percentiles (2 and 98 by default), not clipped, so
  it inverts exactly;
- ``scale`` (:class:`ScaleImageNorm`): a fixed reflectance scale ``x * scale`` (1e-4 for
  uint16 reflectance x 10000, 1/255 for uint8 DN, 1 for float reflectance).

Elevation strategies (``forward`` metres -> normalized, ``inverse`` back; per-chip
strategies take the chip's ``offset`` in metres, stored per chip in the chip store):

- ``global`` (:class:`ElevationNorm`): to [-1, 1] by the training split's min and max
  (Sat2DEM);
- ``global-shift`` (:class:`GlobalShiftNorm`): each chip's minimum goes to -1 and the largest
  training chip relief to +1 (relative heights; the chip minimum is the offset);
- ``zscore`` (:class:`ZScoreNorm`): ``(h - mean) / std`` of the training heights;
- ``residual`` (:class:`ResidualNorm`): ``(h - chip mean) / GSF`` for refinement (DeepDEM,
  Stucker et al.), the global scale factor GSF being the mean per-chip standard deviation of
  valid heights over training chips of the chosen size.

Statistics are fitted on the training split only; :func:`norm_from_dict` rebuilds any of
them from its stored dict, dispatching on ``strategy``.
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

    def inverse(self, z: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalized -> stored DNs (the inverse of :meth:`apply`)."""
        mean, std = self._stats(z)
        return (z * std + mean) / self.scale

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

    per_chip = False
    offset_stat = None

    @property
    def metres_per_unit(self) -> float:
        return self.half_range

    def forward(self, h: Any, offset: Any = None) -> Any:
        """Metres -> normalized (``offset`` is ignored: the strategy is global)."""
        return (h - self.vmin) / self.half_range - 1.0

    def inverse(self, z: Any, offset: Any = None) -> Any:
        """Normalized -> metres (the exact inverse of :meth:`forward`)."""
        return (z + 1.0) * self.half_range + self.vmin

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElevationNorm:
        if d.get("strategy", "global") != "global":
            raise ValueError(f"unknown elevation normalization {d.get('strategy')!r}")
        return cls(float(d["vmin"]), float(d["vmax"]))


ELEVATION_STRATEGIES = ("global", "global-shift", "zscore", "residual")
IMAGE_STRATEGIES = ("percentile", "scale", "band-zscore")


def default_reflectance_scale(dtype: str | np.dtype) -> float:
    """Scale from stored values to reflectance-like 0..1 numbers, guessed from the dtype."""
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return 1.0 / 255.0
    if dt.kind in "ui":
        return 1e-4  # uint16/int16 reflectance x 10000 (Sentinel-2 L2A, Landsat C2 SR-like)
    return 1.0


def _as(x: Any, values: list[float], n: int) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.tensor(values, dtype=torch.float32, device=x.device).view(n, 1, 1)
    return np.asarray(values, np.float64 if np.asarray(x).dtype == np.float64 else np.float32)[
        :, None, None
    ]


@dataclass
class PercentileImageNorm:
    """``percentile``: per-band ``(x - lo) / (hi - lo)`` with training percentiles lo, hi."""

    bands: list[str]
    lo: list[float]
    hi: list[float]
    p_lo: float = 2.0
    p_hi: float = 98.0

    @classmethod
    def fit(
        cls, samples: np.ndarray, bands: list[str], p_lo: float = 2.0, p_hi: float = 98.0
    ) -> PercentileImageNorm:
        """Fit on (bands, N) valid training pixel values (stored units)."""
        if samples.shape[1] == 0:
            raise ValueError("no valid pixels to fit the image normalization")
        lo = np.percentile(samples, p_lo, axis=1)
        hi = np.percentile(samples, p_hi, axis=1)
        hi = np.where(hi - lo < 1e-12, lo + 1.0, hi)
        return cls(list(bands), lo.tolist(), hi.tolist(), p_lo, p_hi)

    def apply(self, x: Any) -> Any:
        n = len(self.bands)
        lo, hi = _as(x, self.lo, n), _as(x, self.hi, n)
        return (x - lo) / (hi - lo)

    def inverse(self, z: Any) -> Any:
        n = len(self.bands)
        lo, hi = _as(z, self.lo, n), _as(z, self.hi, n)
        return z * (hi - lo) + lo

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": "percentile", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PercentileImageNorm:
        return cls(list(d["bands"]), list(d["lo"]), list(d["hi"]), d["p_lo"], d["p_hi"])


@dataclass
class ScaleImageNorm:
    """``scale``: a fixed reflectance scale, ``x * scale`` for every band."""

    bands: list[str]
    scale: float = 1e-4

    def apply(self, x: Any) -> Any:
        return x * self.scale

    def inverse(self, z: Any) -> Any:
        return z / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": "scale", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScaleImageNorm:
        return cls(list(d["bands"]), float(d["scale"]))


@dataclass
class ChipStats:
    """Per-chip summaries of valid heights (metres) from which every strategy is fitted."""

    count: np.ndarray  # valid pixels per chip
    vmin: np.ndarray
    vmax: np.ndarray
    mean: np.ndarray
    std: np.ndarray  # population standard deviation per chip

    def subset(self, idx: Any) -> ChipStats:
        idx = np.asarray(idx, dtype=np.int64)
        return ChipStats(*(np.asarray(a, np.float64)[idx] for a in asdict(self).values()))

    @classmethod
    def of(cls, h: np.ndarray, valid: np.ndarray) -> tuple[int, float, float, float, float]:
        """(count, min, max, mean, std) of one chip's valid heights, in float64."""
        v = h[valid].astype(np.float64)
        if v.size == 0:
            return 0, float("nan"), float("nan"), float("nan"), float("nan")
        return int(v.size), float(v.min()), float(v.max()), float(v.mean()), float(v.std())


@dataclass
class GlobalShiftNorm:
    """``global-shift``: ``(h - chip_min) / half_range - 1``; ``half_range`` = max relief / 2."""

    half_range: float
    strategy: str = "global-shift"
    per_chip = True
    offset_stat = "min"

    @property
    def metres_per_unit(self) -> float:
        return self.half_range

    @classmethod
    def fit(cls, stats: ChipStats) -> GlobalShiftNorm:
        ok = stats.count > 0
        if not ok.any():
            raise ValueError("no valid heights to fit the elevation normalization")
        relief = float(np.max(stats.vmax[ok] - stats.vmin[ok]))
        return cls(max(relief, 1e-6) / 2.0)

    def forward(self, h: Any, offset: Any = None) -> Any:
        return (h - _need(offset)) / self.half_range - 1.0

    def inverse(self, z: Any, offset: Any = None) -> Any:
        return (z + 1.0) * self.half_range + _need(offset)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "half_range": self.half_range}


@dataclass
class ZScoreNorm:
    """``zscore``: ``(h - mean) / std`` with the training split's mean and std of heights."""

    mean: float
    std: float
    strategy: str = "zscore"
    per_chip = False
    offset_stat = None

    @property
    def metres_per_unit(self) -> float:
        return self.std

    @classmethod
    def fit(cls, stats: ChipStats) -> ZScoreNorm:
        ok = stats.count > 0
        n = stats.count[ok]
        if n.sum() == 0:
            raise ValueError("no valid heights to fit the elevation normalization")
        mean = float(np.sum(n * stats.mean[ok]) / n.sum())
        # Pooled variance: within-chip plus between-chip parts (exact, no E[h^2] cancellation).
        var = float(np.sum(n * (stats.std[ok] ** 2 + (stats.mean[ok] - mean) ** 2)) / n.sum())
        return cls(mean, max(var**0.5, 1e-6))

    def forward(self, h: Any, offset: Any = None) -> Any:
        return (h - self.mean) / self.std

    def inverse(self, z: Any, offset: Any = None) -> Any:
        return z * self.std + self.mean

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "mean": self.mean, "std": self.std}


@dataclass
class ResidualNorm:
    """``residual`` (DeepDEM): ``(h - chip_mean) / gsf``, GSF = mean per-chip std (training)."""

    gsf: float
    chip_size: int | None = None
    strategy: str = "residual"
    per_chip = True
    offset_stat = "mean"

    @property
    def metres_per_unit(self) -> float:
        return self.gsf

    @classmethod
    def fit(cls, stats: ChipStats, chip_size: int | None = None) -> ResidualNorm:
        ok = stats.count > 1
        if not ok.any():
            raise ValueError("no valid heights to fit the elevation normalization")
        return cls(max(float(np.mean(stats.std[ok])), 1e-6), chip_size)

    def forward(self, h: Any, offset: Any = None) -> Any:
        return (h - _need(offset)) / self.gsf

    def inverse(self, z: Any, offset: Any = None) -> Any:
        return z * self.gsf + _need(offset)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "gsf": self.gsf, "chip_size": self.chip_size}


def _need(offset: Any) -> Any:
    if offset is None:
        raise ValueError("this elevation normalization is per chip: pass the chip's offset")
    return offset


def _global_fit(stats: ChipStats) -> ElevationNorm:
    ok = stats.count > 0
    if not ok.any():
        raise ValueError("no valid heights to fit the elevation normalization")
    lo, hi = float(np.min(stats.vmin[ok])), float(np.max(stats.vmax[ok]))
    return ElevationNorm(lo, hi if hi - lo >= 1e-6 else lo + 1.0)


def fit_elevation_norm(strategy: str, stats: ChipStats, chip_size: int | None = None) -> Any:
    """Fit the named elevation strategy on (training) per-chip statistics."""
    if strategy == "global":
        return _global_fit(stats)
    if strategy == "global-shift":
        return GlobalShiftNorm.fit(stats)
    if strategy == "zscore":
        return ZScoreNorm.fit(stats)
    if strategy == "residual":
        return ResidualNorm.fit(stats, chip_size)
    raise ValueError(
        f"unknown elevation normalization {strategy!r} (one of {ELEVATION_STRATEGIES})"
    )


def fit_image_norm(
    strategy: str,
    samples: np.ndarray,
    bands: list[str],
    *,
    scale: float | None = None,
    dtype: str | np.dtype = "float32",
) -> Any:
    """Fit the named image strategy on (bands, N) valid training pixels in stored units."""
    if strategy == "percentile":
        return PercentileImageNorm.fit(samples, bands)
    s = default_reflectance_scale(dtype) if scale is None else float(scale)
    if strategy == "scale":
        return ScaleImageNorm(list(bands), s)
    if strategy == "band-zscore":
        return ImageNorm.fit(samples, bands, scale=s)
    raise ValueError(f"unknown image normalization {strategy!r} (one of {IMAGE_STRATEGIES})")


def norm_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild any image or elevation normalization from its ``to_dict``."""
    strategy = d.get("strategy", "global")
    if strategy == "global":
        return ElevationNorm.from_dict(d)
    if strategy == "global-shift":
        return GlobalShiftNorm(float(d["half_range"]))
    if strategy == "zscore":
        return ZScoreNorm(float(d["mean"]), float(d["std"]))
    if strategy == "residual":
        return ResidualNorm(float(d["gsf"]), d.get("chip_size"))
    if strategy == "percentile":
        return PercentileImageNorm.from_dict(d)
    if strategy == "scale":
        return ScaleImageNorm.from_dict(d)
    if strategy == "band-zscore":
        return ImageNorm.from_dict(d)
    raise ValueError(f"unknown normalization strategy {strategy!r}")
