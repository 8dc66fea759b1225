"""Hillshade from a DEM in metres, correct for the pixel size (Horn-style gradients)."""

from __future__ import annotations

import numpy as np


def hillshade(
    dem: np.ndarray,
    pixel_size: float | tuple[float, float] = 1.0,
    azimuth: float = 315.0,
    altitude: float = 45.0,
) -> np.ndarray:
    """Illumination in [0, 1] of a (H, W) DEM lit from ``azimuth`` (deg clockwise from north).

    ``pixel_size`` is (x, y) in metres, so slopes are true slopes; NaN stays NaN.
    """
    px, py = (pixel_size, pixel_size) if np.isscalar(pixel_size) else pixel_size
    z = np.asarray(dem, dtype=np.float64)
    # Rows go south (down the image), columns go east.
    dz_dy, dz_dx = np.gradient(z, abs(py), abs(px))
    dz_dnorth = -dz_dy
    slope = np.arctan(np.hypot(dz_dx, dz_dnorth))
    # Aspect: direction the slope faces (downhill), clockwise from north.
    aspect = np.arctan2(-dz_dx, -dz_dnorth)
    az, alt = np.radians(azimuth), np.radians(altitude)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shade, 0.0, 1.0)
