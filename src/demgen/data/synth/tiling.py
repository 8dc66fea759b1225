"""Tiled generation of synthetic scenes: the tile grid, per-tile coordinates and halo reads.

Every synthetic raster (:mod:`~demgen.data.synth.world`, :mod:`~demgen.data.synth.stereo`,
:mod:`~demgen.data.synth.timeseries`) is written tile by tile; these helpers give each tile
its global map coordinates and pixel indices (so hashed noise is seamless across tiles) and
read neighbouring pixels with a halo, filled or edge-replicated at the scene border.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rasterio.windows import Window

from demgen.data.synth.config import SceneConfig


def scene_tiles(size: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(row, col, height, width) of every processing tile of a square scene, row by row."""
    out = []
    for r0 in range(0, size, tile):
        for c0 in range(0, size, tile):
            out.append((r0, c0, min(tile, size - r0), min(tile, size - c0)))
    return out


def tile_coords(cfg: SceneConfig, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, ...]:
    """Map coordinates of pixel centres (xm (1, w), ym (h, 1)) and global pixel indices."""
    assert cfg.origin is not None
    px = cfg.pixel_size
    cols = np.arange(c0, c0 + w, dtype=np.int64)
    rows = np.arange(r0, r0 + h, dtype=np.int64)
    xm = (cfg.origin[0] + (cols + 0.5) * px)[None, :]
    ym = (cfg.origin[1] - (rows + 0.5) * px)[:, None]
    gcol = (cols + round(cfg.origin[0] / px))[None, :]
    grow = (rows - round(cfg.origin[1] / px))[:, None]
    return xm, ym, gcol, grow


def read_padded(ds: Any, r0: int, c0: int, h: int, w: int, pads: tuple[int, int, int, int],
                 size: int, fill: float) -> np.ndarray:  # fmt: skip
    """Read [r0-top, r0+h+bottom) x [c0-left, c0+w+right), `fill` outside the scene."""
    top, bottom, left, right = pads
    out = np.full((h + top + bottom, w + left + right), fill, dtype=np.float32)
    ra, rb = max(0, r0 - top), min(size, r0 + h + bottom)
    ca, cb = max(0, c0 - left), min(size, c0 + w + right)
    data = ds.read(1, window=Window(ca, ra, cb - ca, rb - ra)).astype(np.float32)
    out[ra - (r0 - top) : rb - (r0 - top), ca - (c0 - left) : cb - (c0 - left)] = data
    return out


def normals_block(dsm_pad: np.ndarray, top: int, left: int, r0: int, c0: int, h: int, w: int,
                   size: int) -> np.ndarray:  # fmt: skip
    """Tile DSM with a 1-pixel rim, edge-replicated at scene borders (for surface normals)."""
    blk = dsm_pad[top - 1 : top + h + 1, left - 1 : left + w + 1].copy()
    if r0 == 0:
        blk[0] = blk[1]
    if r0 + h == size:
        blk[-1] = blk[-2]
    if c0 == 0:
        blk[:, 0] = blk[:, 1]
    if c0 + w == size:
        blk[:, -1] = blk[:, -2]
    return blk
