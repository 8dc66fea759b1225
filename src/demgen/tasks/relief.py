"""What a DEM -> image model sees of the relief: features computed from heights in metres.

A network given raw heights has to learn derivatives with the right pixel size itself; the
image, though, is drawn by slope, aspect, illumination and the height belts of the climate
(tree, rock and snow lines). :func:`relief_features` turns a DEM in metres (B, 1, H, W) into
those quantities, all with the true pixel size in metres and all translation-equivariant
(no per-window statistic), so overlapping prediction windows agree and blend without seams:

==============  =====================================================================
channel         formula (``p = dz/dx``, ``q = dz/dy`` northward, central differences,
                edge-replicated; ``n = 1 / sqrt(1 + p^2 + q^2)``)
==============  =====================================================================
``height``      ``(h - mean) / std``: the training heights' statistics (height belts)
``local_relief`` ``(h - box_mean_k(h)) / LOCAL_RELIEF_SCALE_M``: ridges > 0, valleys < 0,
                over a ``(2 radius + 1)`` px box (reflect-padded)
``normal_x``    ``-p n``: the surface normal's east component (aspect x sin slope)
``normal_y``    ``-q n``: its north component
``slope``       ``atan(sqrt(p^2 + q^2)) / 90 deg``
``hillshade``   ``max(0, cos i)``, ``cos i = (sz - p sx - q sy) n`` for the sun vector
                ``(sx, sy, sz)`` of azimuth/elevation (Lambert; the renderer's own formula)
``sky_view``    ``(1 + n) / 2``: the diffuse sky fraction of a tilted plane
==============  =====================================================================

The per-pixel linear baseline of DEM -> image (:mod:`demgen.baselines_image`) regresses on
the same channels, so both see exactly the same relief.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from demgen.io.geodesy import sun_vector

#: Names of the channels of :func:`relief_features`, in order.
FEATURES: tuple[str, ...] = (
    "height",
    "local_relief",
    "normal_x",
    "normal_y",
    "slope",
    "hillshade",
    "sky_view",
)
#: Metres of local relief that map to 1 (a 50 m ridge above its surroundings).
LOCAL_RELIEF_SCALE_M = 50.0


def _gradients(h: torch.Tensor, px: float, py: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Central-difference ``dz/dx`` (east) and ``dz/dy`` (north) in metres per metre."""
    z = F.pad(h, (1, 1, 1, 1), mode="replicate")
    p = (z[..., 1:-1, 2:] - z[..., 1:-1, :-2]) / (2.0 * px)
    q = (z[..., :-2, 1:-1] - z[..., 2:, 1:-1]) / (2.0 * py)  # row 0 is north
    return p, q


def relief_features(
    heights: torch.Tensor,
    pixel_size: float | Sequence[float],
    *,
    height_mean: float,
    height_std: float,
    sun_azimuth: float = 150.0,
    sun_elevation: float = 40.0,
    radius: int = 8,
) -> torch.Tensor:
    """Heights in metres (B, 1, H, W) -> the :data:`FEATURES` (B, 7, H, W), float32.

    ``pixel_size`` is metres (one value, or (x, y)); ``height_mean``/``height_std`` are the
    training heights' statistics; the sun is the one the training images were taken under
    (Sentinel-2 mid-latitude summer mornings are near azimuth 150, elevation 40-60 deg).
    Heights must be finite (fill holes first).
    """
    px, py = (float(pixel_size),) * 2 if isinstance(pixel_size, int | float) else pixel_size
    if not (px > 0 and py > 0):
        raise ValueError(f"pixel size must be positive metres, got {pixel_size!r}")
    h = heights.float()
    p, q = _gradients(h, float(px), float(py))
    g2 = p * p + q * q
    n = torch.rsqrt(1.0 + g2)
    sx, sy, sz = sun_vector(sun_azimuth, sun_elevation)
    cos_i = (sz - p * sx - q * sy) * n
    pad = min(radius, h.shape[-1] - 1, h.shape[-2] - 1)
    hp = F.pad(h, (pad, pad, pad, pad), mode="reflect") if pad > 0 else h
    local = F.avg_pool2d(hp, kernel_size=2 * pad + 1, stride=1) if pad > 0 else h
    feats = [
        (h - height_mean) / max(float(height_std), 1e-6),
        (h - local) / LOCAL_RELIEF_SCALE_M,
        -p * n,
        -q * n,
        torch.atan(torch.sqrt(g2)) / (math.pi / 2),
        cos_i.clamp(min=0.0),
        (1.0 + n) * 0.5,
    ]
    return torch.cat(feats, dim=1)


__all__ = ["FEATURES", "LOCAL_RELIEF_SCALE_M", "relief_features"]
