"""Hillshade from a DEM in metres, correct for the pixel size (central-difference gradients)."""

from __future__ import annotations

import numpy as np

from demgen.metrics.dem import gradient_east_north


def hillshade(
    dem: np.ndarray,
    pixel_size: float | tuple[float, float] | tuple[np.ndarray, np.ndarray] = 1.0,
    azimuth: float = 315.0,
    altitude: float = 45.0,
) -> np.ndarray:
    """Illumination in [0, 1] of a (H, W) DEM lit from ``azimuth`` (deg clockwise from north).

    ``pixel_size`` is (x, y) in metres (never degrees: see :mod:`demgen.io.geodesy`), so
    slopes are true slopes; per-row (H, 1) arrays are accepted for geographic grids.
    NaN stays NaN.
    """
    size = (pixel_size, pixel_size) if np.isscalar(pixel_size) else tuple(pixel_size)
    dz_dx, dz_dnorth = gradient_east_north(dem, size)
    # With slope s and downhill aspect a (clockwise from north), the lit fraction is
    # sin(alt) cos(s) + cos(alt) sin(s) cos(az - a); as cos(s) = 1 / sqrt(1 + g^2),
    # sin(s) cos(a) = -dz/dnorth / sqrt(1 + g^2) and sin(s) sin(a) = -dz/dx / sqrt(1 + g^2),
    # no trigonometry per pixel is needed.
    az, alt = np.radians(azimuth), np.radians(altitude)
    shade = np.cos(az) * dz_dnorth
    shade += np.sin(az) * dz_dx
    shade *= -np.cos(alt)
    shade += np.sin(alt)
    np.square(dz_dx, out=dz_dx)
    np.square(dz_dnorth, out=dz_dnorth)
    dz_dx += dz_dnorth
    dz_dx += 1.0
    shade /= np.sqrt(dz_dx, out=dz_dx)
    return np.clip(shade, 0.0, 1.0, out=shade)
