"""Perlin terrain: a seeded fBm height field in metres, the procedural DEM of ImageToDEM.

ImageToDEM (Panagiotou, Chochlakis, Grammatikopoulos and Charou, "Generating Elevation
Surface from a Single RGB Remotely Sensed Image Using Deep Learning", *Remote Sensing*
2020, 12(12):2002) trained its network the inverse way too, RGB image from DEM, and its
code's README pairs that with DEMs from Perlin noise to make fully artificial landscapes.
This is such a terrain: fractal Brownian motion of Perlin gradient noise (Perlin, "An
image synthesizer", SIGGRAPH 1985; "Improving noise", SIGGRAPH 2002, whose quintic fade
it uses; the gradients come from hashing lattice points instead of a permutation table),
with none of the synthetic world's domain warp, ridges or erosion (:mod:`.terrain`).

    h = base_height_m + relief_m * clip(0.5 + 0.5 * fbm, 0, 1)

``fbm`` is the amplitude-normalized sum of ``octaves`` noise layers (wavelength halved and
amplitude multiplied by ``persistence`` per octave, in about [-1, 1]), so every height lies
in ``[base_height_m, base_height_m + relief_m]``. The noise is :func:`.noise.perlin`, whose
gradients hash global lattice points: heights are a pure function of the global pixel
position, the seed and the parameters, so a tile of a larger terrain (``offset``) equals the
same pixels computed alone, bit for bit. Vectorized numpy, separable coordinates: a
4096-px side takes a few seconds.

:func:`perlin_relief` gives the parameters of the synthetic world's relief presets (their
elevation ranges and largest wavelengths), so ``plains``, ``hills`` and ``alpine`` mean the
same height range with either terrain.
"""

from __future__ import annotations

import numpy as np

from demgen.data.synth.noise import mix_key, perlin
from demgen.data.synth.terrain import PRESETS
from demgen.errors import InputError

__all__ = ["perlin_relief", "perlin_terrain"]


def perlin_relief(relief: str) -> dict[str, float]:
    """``base_height_m``, ``relief_m`` and ``base_wavelength_m`` of a relief preset
    (``plains``, ``hills``, ``alpine``): the preset's elevation range (``plains`` -40 to
    300 m, ``hills`` -150 to 1500 m, ``alpine`` 200 to 4000 m) and half its largest
    wavelength (Perlin noise has no domain warp to break up the largest octave)."""
    if relief not in PRESETS:
        raise InputError(f"relief must be one of {', '.join(PRESETS)}, got {relief!r}")
    p = PRESETS[relief]
    lo, hi = p.elevation_range
    return {"base_height_m": lo, "relief_m": hi - lo, "base_wavelength_m": p.wavelength / 2}


def perlin_terrain(
    size: int | tuple[int, int],
    seed: int,
    *,
    pixel_size: float,
    relief_m: float,
    base_height_m: float = 0.0,
    octaves: int = 6,
    persistence: float = 0.5,
    base_wavelength_m: float = 4000.0,
    offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """A (rows, cols) float32 height field in metres, in ``[base_height_m, base_height_m +
    relief_m]`` (module docstring).

    Args:
        size: pixels per side, or (rows, cols).
        seed: any integer; the same seed and parameters give the same heights.
        pixel_size: metres per pixel (wavelengths are in metres, so the relief keeps its
            shape at any resolution).
        relief_m: height span (metres, >= 0); ``base_height_m``: the lowest possible height.
        octaves: noise layers (>= 1); ``persistence``: amplitude ratio of successive octaves.
        base_wavelength_m: wavelength of the largest octave (metres).
        offset: (row, col) of the first pixel in the terrain's global pixel grid: the tile
            ``(r, c)`` of size ``(h, w)`` equals ``perlin_terrain(big, ...)[r:r+h, c:c+w]``.
    """
    rows, cols = (size, size) if isinstance(size, int | np.integer) else size
    if int(rows) < 1 or int(cols) < 1:
        raise InputError(f"size must be positive, got {size!r}")
    if not pixel_size > 0 or not base_wavelength_m > 0:
        raise InputError("pixel_size and base_wavelength_m must be > 0 metres")
    if not relief_m >= 0:
        raise InputError(f"relief_m must be >= 0 metres, got {relief_m!r}")
    if int(octaves) < 1 or not 0 < persistence <= 1:
        raise InputError("octaves must be >= 1 and persistence in (0, 1]")
    r0, c0 = (int(v) for v in offset)
    # pixel centres in metres, north-up (y decreases downwards); separable (1, W) and (H, 1)
    x = ((np.arange(c0, c0 + int(cols), dtype=np.float64) + 0.5) * pixel_size)[None, :]
    y = (-(np.arange(r0, r0 + int(rows), dtype=np.float64) + 0.5) * pixel_size)[:, None]
    total = np.zeros((int(rows), int(cols)), dtype=np.float32)
    amp, norm = 1.0, 0.0
    for i in range(int(octaves)):
        lam = base_wavelength_m / 2.0**i
        total += perlin(x / lam, y / lam, mix_key(int(seed), "perlin_terrain", i)) * np.float32(amp)
        norm += amp
        amp *= persistence
    t = np.clip(np.float32(0.5) + np.float32(0.5 / norm) * total, 0.0, 1.0)
    return (np.float32(base_height_m) + np.float32(relief_m) * t).astype(np.float32)
