"""Urban growth of a synthetic time series: roads, block development and building lots.

Growth runs on the urban block grid of :mod:`demgen.data.synth.terrain` (BLOCK_M blocks with
STREET_M streets, in global metres), which has ~80x fewer cells than the pixels at 10 m, so
the whole scene's block state fits in memory at any size while pixels are made tile by tile.

* Roads: whole block-grid street lines, a line being a road with probability 1/ROAD_EVERY
  (hashed from its global index), drawn over open land only (not water, rock or snow).
* Development: a buildable block (open, gentle land) starts developing (cleared ground and
  streets) with a monthly hazard ``urban_rate * (developed 4-neighbours / 4) + road_rate *
  (touches a road)``, a cellular automaton of the kind used for urban expansion (SLEUTH's
  edge and road-influenced growth, Clarke et al. 1997, Environ. Plann. B 24, 247-261). So a
  new block always borders the previous date's built-up area or a road.
* Lots: each developed block holds 2 x 2 lots; a lot (occupied with probability LOT_OCCUPIED)
  gets its house LOT_DELAY_MONTHS at most after the block was cleared and keeps it: buildings
  only accumulate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demgen.data.synth.terrain import (
    BLOCK_M,
    CROP,
    FOREST,
    GRASS,
    SAND,
    STREET_M,
    URBAN,
    hash_unit,
    mix_key,
)

ROAD_EVERY = 12  # block lines per road, on average (~1.1 km road spacing)
OPEN_CLASSES = (GRASS, CROP, FOREST)  # land a block may be built on (cleared first)
ROAD_CLASSES = (GRASS, CROP, FOREST, SAND, URBAN)
BUILDABLE_SLOPE = 0.15  # tan of slope: ~8.5 degrees, a usual limit for housing estates
BUILDABLE_SHARE = 0.9  # share of a block's pixels that must be buildable
URBAN_SHARE = 0.5  # share of URBAN pixels that makes a block of the base scene built-up
LOT_M = (BLOCK_M - STREET_M) / 2.0  # lot pitch (35 m): 2 x 2 lots per block
LOT_OCCUPIED = 0.9
LOT_DELAY_MONTHS = 6
NEVER = np.iinfo(np.int32).max


def road_lines(index: np.ndarray, axis: str, seed: int) -> np.ndarray:
    """True for global block-grid line indices that carry a road (axis "x" or "y")."""
    return hash_unit(index, np.zeros_like(index), mix_key(seed, "road", axis)) < 1.0 / ROAD_EVERY


def block_coords(xm: np.ndarray, ym: np.ndarray) -> tuple[np.ndarray, ...]:
    """Global block indices (bx, by) and offsets in the block (ox, oy, metres) of coordinates."""
    bx = np.floor(xm / BLOCK_M)
    by = np.floor(ym / BLOCK_M)
    return bx.astype(np.int64), by.astype(np.int64), xm - bx * BLOCK_M, ym - by * BLOCK_M


def road_mask(xm: np.ndarray, ym: np.ndarray, lc: np.ndarray, seed: int) -> np.ndarray:
    """Road pixels of a tile (base land cover `lc`): street strips of road lines, open land."""
    bx, by, ox, oy = block_coords(xm, ym)
    road = (road_lines(bx, "x", seed) & (ox < STREET_M)) | (
        road_lines(by, "y", seed) & (oy < STREET_M)
    )
    return road & np.isin(lc, ROAD_CLASSES)


@dataclass
class BlockGrid:
    """Per-block state over the scene: global index origin and (nby, nbx) arrays."""

    bx0: int
    by0: int
    n_pix: np.ndarray
    n_urban: np.ndarray
    n_buildable: np.ndarray
    n_vroad: np.ndarray  # road pixels in the block's own west strip
    n_hroad: np.ndarray  # road pixels in the block's own south strip
    t_dev: np.ndarray | None = None  # date a block starts developing; -1 base urban; NEVER

    @classmethod
    def empty(cls, xm_all: np.ndarray, ym_all: np.ndarray) -> BlockGrid:
        """Grid covering pixel-centre coordinates xm_all (1, W) and ym_all (H, 1) of a scene."""
        bx, by, _, _ = block_coords(xm_all, ym_all)
        bx0, by0 = int(bx.min()), int(by.min())
        shape = (int(by.max()) - by0 + 1, int(bx.max()) - bx0 + 1)
        z = [np.zeros(shape, dtype=np.int64) for _ in range(5)]
        return cls(bx0, by0, *z)

    def index(self, xm: np.ndarray, ym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Array indices (row (H, 1), col (1, W)) of the blocks of tile coordinates."""
        bx, by, _, _ = block_coords(xm, ym)
        return by - self.by0, bx - self.bx0

    def add_tile(self, xm: np.ndarray, ym: np.ndarray, lc: np.ndarray, dtm: np.ndarray,
                 slope: np.ndarray, sea_level: float, seed: int) -> None:  # fmt: skip
        """Accumulate a tile's per-block pixel counts (base land cover, DTM and slope)."""
        r, c = self.index(xm, ym)
        flat = np.broadcast_to(r * self.n_pix.shape[1] + c, lc.shape).ravel()
        n = self.n_pix.size
        _, _, ox, oy = block_coords(xm, ym)
        road = road_mask(xm, ym, lc, seed)
        buildable = np.isin(lc, OPEN_CLASSES) & (slope < BUILDABLE_SLOPE) & (dtm > sea_level + 4)
        for arr, m in (
            (self.n_pix, np.ones(lc.shape, bool)),
            (self.n_urban, lc == URBAN),
            (self.n_buildable, buildable),
            (self.n_vroad, road & np.broadcast_to(ox < STREET_M, lc.shape)),
            (self.n_hroad, road & np.broadcast_to(oy < STREET_M, lc.shape)),
        ):
            arr += (
                np.bincount(flat, weights=m.ravel(), minlength=n)
                .astype(np.int64)
                .reshape(arr.shape)
            )

    def simulate(self, seed: int, n_dates: int, months_between: int, urban_rate: float,
                 road_rate: float) -> np.ndarray:  # fmt: skip
        """Run the growth automaton over the dates; sets and returns t_dev."""
        pix = np.maximum(self.n_pix, 1)
        urban0 = self.n_urban >= URBAN_SHARE * pix
        buildable = (self.n_buildable >= BUILDABLE_SHARE * pix) & ~urban0
        vr = self.n_vroad > 0
        hr = self.n_hroad > 0
        road_adj = vr | hr
        road_adj[:, :-1] |= vr[:, 1:]  # the east neighbour's west strip is our east edge
        road_adj[:-1, :] |= hr[1:, :]  # row r+1 is the block north of row r (by grows north)
        t_dev = np.where(urban0, -1, NEVER).astype(np.int32)
        gy = np.arange(self.n_pix.shape[0], dtype=np.int64)[:, None] + self.by0
        gx = np.arange(self.n_pix.shape[1], dtype=np.int64)[None, :] + self.bx0
        for t in range(1, n_dates):
            prev = t_dev < t
            p = np.pad(prev, 1).astype(np.float32)
            n_nb = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
            lam = np.clip(urban_rate * n_nb / 4.0 + road_rate * road_adj, 0.0, 1.0)
            prob = 1.0 - (1.0 - lam) ** months_between
            u = hash_unit(gx, gy, mix_key(seed, "grow", t))
            t_dev[buildable & ~prev & (u < prob)] = t
        self.t_dev = t_dev
        return t_dev


def urban_fields(grid: BlockGrid, xm: np.ndarray, ym: np.ndarray, base_lc: np.ndarray,
                 seed: int, t: int, months_between: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-pixel urban state of date `t` on a tile.

    Returns boolean masks ``road``, ``developed`` (open pixels of blocks developing by t),
    ``building`` (new houses built by t), ``yard`` (around built houses), ``cleared`` (vacant
    or not yet built lots), and ``height`` (metres) / ``roof`` (variant index) of the houses.
    """
    assert grid.t_dev is not None
    shape = base_lc.shape
    r, c = grid.index(xm, ym)
    t_dev = np.broadcast_to(grid.t_dev[r, c], shape)
    open_land = np.isin(base_lc, OPEN_CLASSES)
    developed = (t_dev >= 0) & (t_dev <= t) & open_land
    bx, by, ox, oy = block_coords(xm, ym)
    inner = np.broadcast_to((ox >= STREET_M) & (oy >= STREET_M), shape)
    lx = np.clip(np.floor((ox - STREET_M) / LOT_M), 0, 1).astype(np.int64)
    ly = np.clip(np.floor((oy - STREET_M) / LOT_M), 0, 1).astype(np.int64)
    gx, gy = bx * 2 + lx, by * 2 + ly

    def h(name: str) -> np.ndarray:
        return np.broadcast_to(hash_unit(gx, gy, mix_key(seed, "lot", name)), shape)

    occupied = h("occ") < LOT_OCCUPIED
    delay = np.floor(h("delay") * LOT_DELAY_MONTHS)
    built = (
        developed & inner & occupied & ((t - t_dev).astype(np.float64) * months_between >= delay)
    )
    # footprint: 15-30 m sides, placed with jitter inside its 35 m lot
    lo_x = np.broadcast_to(ox - STREET_M - lx * LOT_M, shape)
    lo_y = np.broadcast_to(oy - STREET_M - ly * LOT_M, shape)
    wx, wy = 15.0 + 15.0 * h("wx"), 15.0 + 15.0 * h("wy")
    cx = LOT_M / 2 + (LOT_M - wx) / 2 * (2 * h("cx") - 1) * 0.8
    cy = LOT_M / 2 + (LOT_M - wy) / 2 * (2 * h("cy") - 1) * 0.8
    foot = (np.abs(lo_x - cx) < wx / 2) & (np.abs(lo_y - cy) < wy / 2)
    building = built & foot
    return {
        "road": road_mask(xm, ym, base_lc, seed),
        "developed": developed,
        "building": building,
        "yard": built & ~foot,
        "cleared": developed & inner & ~built,
        "height": (4.0 + 8.0 * h("height")).astype(np.float32),
        "roof": np.minimum((h("roof") * 4).astype(np.int64), 3),
    }
