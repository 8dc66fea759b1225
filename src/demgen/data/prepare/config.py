"""Configuration of a chip store build: :class:`PrepareConfig` (every field a CLI flag) and its
checks, and which extra layers hold heights (:func:`extra_kind`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from demgen.data.normalize import (
    ELEVATION_STRATEGIES,
    IMAGE_STRATEGIES,
)
from demgen.errors import InputError

# Extra layers with these names hold heights: they follow --z-unit like the DEM and are
# stored in metres. Any other name is stored as the source's values unless listed in
# ``PrepareConfig.extra_heights`` (--extra-heights).
HEIGHT_EXTRAS = ("dsm", "dtm", "dem", "initial_dsm", "initial_dem", "initial_dtm", "height")


def extra_kind(name: str, heights: Sequence[str] = ()) -> str:
    """'height' for a height layer (a known height name or one listed in ``heights``)."""
    low = name.lower()
    return "height" if low in HEIGHT_EXTRAS or low in {h.lower() for h in heights} else "value"


@dataclass
class PrepareConfig:
    """How to chip, mask, split and normalize (every field has a CLI flag)."""

    chip_size: int = 256
    stride: int | None = None  # default: chip_size (no overlap)
    grid: str = "dem"  # "dem" | "image"; or crs/resolution below
    crs: str | None = None
    resolution: float | None = None
    bands: list[str] | None = None
    normalize: str = "global"  # elevation strategy
    image_normalize: str = "percentile"
    image_scale: float | None = None  # for image "scale"/"band-zscore"; default from dtype
    image_resampling: str = "auto"  # auto: average when shrinking >= 1.5x, else bilinear
    z_unit: str | None = None  # None: metres unless the DEM's metadata says feet (an error)
    max_invalid: float = 0.2  # drop chips with a larger fraction of invalid pixels
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    block: int = 4  # chips per side of a split block (shrunk for small inputs)
    buffer: float = 1.0  # chip widths between a training chip and any val/test chip
    folds: int = 0  # k > 1: also store k spatially blocked folds
    seed: int = 0
    samples_per_chip: int = 256  # pixels per chip kept to fit image percentiles
    min_blocks: int = 6
    extra_names: list[str] = field(default_factory=list)  # default: each file's stem
    extra_heights: list[str] = field(default_factory=list)  # more height-layer names
    # extra layers whose nodata are gaps of that layer (NaN in extra.npy), not invalid pixels
    extra_gaps: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Raise InputError (one line, naming the flag) for a value prepare cannot honour."""
        if self.normalize not in ELEVATION_STRATEGIES:
            raise InputError(f"unknown --normalize {self.normalize!r} ({ELEVATION_STRATEGIES})")
        if self.image_normalize not in IMAGE_STRATEGIES:
            raise InputError(f"unknown --image-normalize {self.image_normalize!r}")
        if self.chip_size < 8:
            raise InputError(f"--chip-size {self.chip_size} is too small (at least 8)")
        if self.stride is not None and self.stride <= 0:
            raise InputError("--stride must be positive")
        if not 0 <= self.max_invalid < 1:
            raise InputError(f"--max-invalid {self.max_invalid} must be in [0, 1)")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or sum(self.fractions) <= 0:
            raise InputError(f"--split {self.fractions} needs three non-negative fractions")
        if self.z_unit not in (None, "m", "ft"):
            raise InputError(f"--z-unit {self.z_unit!r} must be m or ft")
        if self.folds == 1 or self.folds < 0:
            raise InputError("--folds must be 0 (none) or at least 2")
