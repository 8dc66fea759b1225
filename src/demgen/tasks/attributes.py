"""Per-chip attributes of an image, the "prompt" of the diffusion tasks that draw images.

Without a downloaded text model, demgen conditions on numbers the data has: the fractions
of a chip's valid pixels that look like snow, vegetation and water, computed from the
training target itself (reflectance, Sentinel-2 band names). A diffusion task trained with
``attributes`` learns them through a small embedding (dropped with ``p_uncond``, so each can
be left out); at sampling, ``--attribute snow=0.8 --attribute vegetation=0.1`` asks for "a
snowy valley" of the same terrain, and guidance above 1 pushes towards it.

Definitions (reflectance; NDVI = (B8 - B4) / (B8 + B4), NDWI = (B3 - B8) / (B3 + B8),
McFeeters 1996, 2013):

- ``vegetation``: NDVI > 0.4 (green vegetation; bare soil and rock lie below 0.3);
- ``water``: NDWI > 0.3 (open water reflects green well above near-infrared; McFeeters
  2013 raises his 1996 threshold of 0 to 0.3 against built-up and snow surfaces, whose
  NDWI lies near 0 to 0.1);
- ``snow``: mean visible reflectance (B2, B3, B4) > 0.35 and NDVI < 0.1: bright and grey.
  Without a shortwave-infrared band there is no NDSI, so bright cloud-free rock or roofs
  can count; on the synthetic worlds it follows the snow cover.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: attribute name -> the bands it needs
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "snow": ("B2", "B3", "B4", "B8"),
    "vegetation": ("B4", "B8"),
    "water": ("B3", "B8"),
}
NDVI_VEGETATION = 0.4
NDWI_WATER = 0.3
SNOW_VISIBLE = 0.35
SNOW_NDVI = 0.1


def check_attributes(names: Sequence[str], bands: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple; ValueError for an unknown name or one whose bands are missing."""
    for n in names:
        if n not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {n!r}; known: {sorted(ATTRIBUTES)}")
        missing = [b for b in ATTRIBUTES[n] if b not in bands]
        if missing:
            raise ValueError(f"attribute {n!r} needs bands {missing}, not in {list(bands)}")
    if len(set(names)) != len(names):
        raise ValueError(f"attributes named twice: {list(names)}")
    return tuple(names)


def _nd(a: Tensor, b: Tensor) -> Tensor:
    """Normalized difference ``(a - b) / (a + b)``, 0 where ``a + b`` is 0."""
    s = a + b
    return torch.where(s.abs() > 1e-6, (a - b) / s.clamp(min=1e-6), torch.zeros_like(s))


def image_attributes(refl: Tensor, bands: Sequence[str], mask: Tensor,
                     names: Sequence[str]) -> Tensor:  # fmt: skip
    """(B, len(names)) fractions in [0, 1] of each chip's valid pixels that are snow,
    vegetation, water (module docstring) in ``refl`` (B, C, H, W) reflectance with band
    names ``bands``; ``mask`` (B, 1, H, W) bool. A chip without a valid pixel gives 0."""
    idx = {b: i for i, b in enumerate(bands)}
    band = {b: refl[:, idx[b] : idx[b] + 1].float() for b in idx}
    m = mask.bool()
    n = m.sum(dim=(1, 2, 3)).clamp(min=1).float()
    out = []
    for name in names:
        if name == "vegetation":
            hit = _nd(band["B8"], band["B4"]) > NDVI_VEGETATION
        elif name == "water":
            hit = _nd(band["B3"], band["B8"]) > NDWI_WATER
        else:  # snow
            visible = (band["B2"] + band["B3"] + band["B4"]) / 3.0
            hit = (visible > SNOW_VISIBLE) & (_nd(band["B8"], band["B4"]) < SNOW_NDVI)
        out.append((hit & m).sum(dim=(1, 2, 3)).float() / n)
    return torch.stack(out, dim=1) if out else refl.new_zeros(refl.shape[0], 0)


def attribute_vector(given: dict[str, float] | None, names: Sequence[str]) -> list[float] | None:
    """The attribute values of a sampling call in the task's order, or None (no attributes:
    the learned "no attributes" embedding). ValueError naming an unknown or missing name, or
    a value outside [0, 1]."""
    if not given:
        return None
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"unknown attributes {unknown}: the checkpoint knows {list(names)}")
    missing = [n for n in names if n not in given]
    if missing:
        raise ValueError(f"give every attribute or none: missing {missing} (of {list(names)})")
    for n, v in given.items():
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"attribute {n}={v}: a fraction in [0, 1]")
    return [float(given[n]) for n in names]


__all__ = ["ATTRIBUTES", "attribute_vector", "check_attributes", "image_attributes"]
