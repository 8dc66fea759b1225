"""Seamless hash-lattice noise: 32-bit key mixing, lattice hashes, gradient noise and fBm.

Every value is a pure function of global lattice coordinates and a key, so any window of the
plane is seamless and tiled output is bit-identical to untiled output. Terrain, climate,
stereo errors and the time series all draw their randomness from here.
"""

from __future__ import annotations

import numpy as np

_ANG = np.arange(16, dtype=np.float64) * (2.0 * np.pi / 16.0) + np.pi / 16.0
_GX = np.cos(_ANG).astype(np.float32)
_GY = np.sin(_ANG).astype(np.float32)


# --------------------------------------------------------------------------- hashing / noise
def _fmix(h: int) -> int:
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def mix_key(*parts: int | str) -> int:
    """Combine a seed and field identifiers into a 32-bit key (stable across runs and platforms)."""
    h = 0x9E3779B9
    for p in parts:
        v = sum(ord(ch) * 31**i for i, ch in enumerate(p)) if isinstance(p, str) else int(p)
        h = _fmix(h ^ (v & 0xFFFFFFFF) ^ ((v >> 32) * 0x27D4EB2F))
    return h


def hash2(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """32-bit avalanche hash of integer lattice coordinates (broadcasting), as uint32."""
    a = np.asarray(ix).astype(np.int64).astype(np.uint32)
    b = np.asarray(iy).astype(np.int64).astype(np.uint32)
    h = (a * np.uint32(0x8DA6B343)) ^ (b * np.uint32(0xD8163841)) ^ np.uint32(key & 0xFFFFFFFF)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def hash_unit(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Uniform [0, 1) float32 from integer coordinates; used for per-cell/per-pixel randomness."""
    return ((hash2(ix, iy, key) >> np.uint32(8)).astype(np.float32)) * np.float32(2.0**-24)


def perlin(x: np.ndarray, y: np.ndarray, key: int) -> np.ndarray:
    """2-D gradient noise in about [-1, 1] at lattice coordinates x, y (float64, broadcastable).

    Gradients come from hashing the global lattice point, so any window of the plane is seamless.
    Separable inputs (x of shape (1, W), y of shape (H, 1)) are much cheaper than full 2-D ones.
    """
    fx = np.floor(x)
    fy = np.floor(y)
    ix = fx.astype(np.int64)
    iy = fy.astype(np.int64)
    tx = (x - fx).astype(np.float32)
    ty = (y - fy).astype(np.float32)
    x0, y0 = int(ix.min()), int(iy.min())
    nx = int(ix.max()) - x0 + 2
    ny = int(iy.max()) - y0 + 2
    lx = np.arange(x0, x0 + nx, dtype=np.int64)[None, :]
    ly = np.arange(y0, y0 + ny, dtype=np.int64)[:, None]
    g = (hash2(lx, ly, key) >> np.uint32(28)).ravel()
    gx = _GX[g]
    gy = _GY[g]
    base = (iy - y0) * nx + (ix - x0)
    tx1 = tx - np.float32(1)
    ty1 = ty - np.float32(1)

    def corner(off: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        idx = base + off if off else base
        return gx.take(idx) * dx + gy.take(idx) * dy

    n00 = corner(0, tx, ty)
    n10 = corner(1, tx1, ty)
    n01 = corner(nx, tx, ty1)
    n11 = corner(nx + 1, tx1, ty1)
    u = tx * tx * tx * (tx * (tx * np.float32(6) - np.float32(15)) + np.float32(10))
    v = ty * ty * ty * (ty * (ty * np.float32(6) - np.float32(15)) + np.float32(10))
    a = n00 + u * (n10 - n00)
    b = n01 + u * (n11 - n01)
    return (a + v * (b - a)) * np.float32(1.41)


def fbm(
    x: np.ndarray, y: np.ndarray, wavelength: float, octaves: int, key: int, gain: float = 0.5
) -> np.ndarray:
    """Fractal Brownian motion of `octaves` gradient-noise layers, normalised to about [-1, 1]."""
    total = None
    amp, norm = 1.0, 0.0
    for i in range(octaves):
        lam = wavelength / 2.0**i
        n = perlin(x / lam, y / lam, mix_key(key, i))
        total = n * np.float32(amp) if total is None else total + n * np.float32(amp)
        norm += amp
        amp *= gain
    assert total is not None
    return total * np.float32(1.0 / norm)
