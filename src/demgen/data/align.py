"""Align imagery, elevation and masks of any CRS onto one grid, window by window.

Inputs are resolved into :class:`ImageScene` objects (:mod:`demgen.data.image_inputs`: one
multi-band raster, one file per band such as Landsat's ``*_B1.TIF`` ... ``*_B7.TIF``, or
several of either), a target :class:`~demgen.io.grid.Grid` is chosen (the DEM's, the
image's, or a given CRS and resolution, cropped to the ground both cover), and
:class:`AlignedScene` reads any window of that grid through rasterio's ``WarpedVRT``: every
continuous layer (elevation, imagery, extras) is averaged when the target pixel is 1.5x or
more the source's, else bilinear; cloud masks take the maximum or the nearest pixel (the
rule and its validity: :mod:`demgen.data.warp`). Only the requested window is ever warped,
so memory stays bounded whatever the scene size.

Validity of every output pixel combines each input's nodata, NaN/inf, the warp's alpha
(pixels outside a source: scene edges) and an optional cloud mask (non-zero = cloud).
Invalid heights are NaN; nothing is filled with 0 m.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from demgen.data.image_inputs import (
    FEET_TO_METRES,
    BandRef,
    ImageScene,
    detect_z_unit,
    image_scenes,
    open_checked,
)
from demgen.data.warp import (
    AVERAGE_FROM_SHRINK,
    CONTINUOUS,
    MASK,
    Layer,
    image_resampling,
    resampling_for,
    shrink_factor,
)
from demgen.errors import InputError
from demgen.io.geodesy import horizontal_crs
from demgen.io.grid import Grid
from demgen.io.raster import open_raster, require_crs


def _union(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """The smallest (left, bottom, right, top) box holding every box."""
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _footprint(path: Path, dst_crs: CRS) -> tuple[float, float, float, float]:
    with open_raster(path) as ds:
        require_crs(ds, path)
        return transform_bounds(horizontal_crs(ds.crs), dst_crs, *ds.bounds, densify_pts=21)


def _grid_of(path: Path) -> Grid:
    with open_raster(path) as ds:
        require_crs(ds, path)
        return Grid(horizontal_crs(ds.crs), ds.transform, ds.width, ds.height)


def _intersect(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float] | None:
    left, bottom = max(a[0], b[0]), max(a[1], b[1])
    right, top = min(a[2], b[2]), min(a[3], b[3])
    return (left, bottom, right, top) if right > left and top > bottom else None


def _crop(grid: Grid, bounds: Sequence[float]) -> Grid | None:
    """The part of ``grid`` (whole pixels) inside ``bounds`` (in the grid's CRS)."""
    inv = ~grid.transform
    cols, rows = zip(*(inv * (x, y) for x in bounds[0::2] for y in bounds[1::2]), strict=True)
    c0 = max(0, math.floor(min(cols) + 1e-6))
    r0 = max(0, math.floor(min(rows) + 1e-6))
    c1 = min(grid.width, math.ceil(max(cols) - 1e-6))
    r1 = min(grid.height, math.ceil(max(rows) - 1e-6))
    if c1 <= c0 or r1 <= r0:
        return None
    t = grid.transform * Affine.translation(c0, r0)
    return Grid(grid.crs, t, c1 - c0, r1 - r0)


def scene_grid(
    scene: ImageScene,
    dems: Sequence[str | Path],
    *,
    grid: str = "dem",
    crs: str | None = None,
    resolution: float | None = None,
) -> Grid:
    """The target grid of a scene, cropped to the ground covered by its image and a DEM.

    ``grid='dem'`` uses the pixel grid of the DEM that overlaps the scene most, ``'image'`` the
    image's (its first band's file), and ``crs``/``resolution`` a new north-up grid.
    """
    img_path = scene.bands[0].path
    dems = [Path(d) for d in dems]
    img_grid = _grid_of(img_path)
    for f in scene.files[1:]:
        g = _grid_of(f)
        if g.crs != img_grid.crs:
            raise InputError(f"{f}: band files of one scene must share a CRS ({img_grid.crs})")
    if crs is not None or resolution is not None:
        target = horizontal_crs(CRS.from_user_input(crs)) if crs is not None else img_grid.crs
        img_b = transform_bounds(img_grid.crs, target, *img_grid.bounds, densify_pts=21)
        hits = [(d, _intersect(img_b, _footprint(d, target))) for d in dems]
        inter = [h for _, h in hits if h is not None]
        if not inter:
            raise InputError(f"{img_path} and {dems[0]}: extents do not overlap")
        b = _union(inter)
        b = _intersect(b, img_b)
        assert b is not None
        res = float(resolution) if resolution is not None else img_grid.res[0]
        left, top = math.floor(b[0] / res) * res, math.ceil(b[3] / res) * res
        width = max(1, math.ceil((b[2] - left) / res - 1e-9))
        height = max(1, math.ceil((top - b[1]) / res - 1e-9))
        return Grid(target, Affine(res, 0, left, 0, -res, top), width, height)
    if grid == "image":
        cover = []
        for d in dems:
            hit = _intersect(img_grid.bounds, _footprint(d, img_grid.crs))
            if hit is not None:
                cover.append(hit)
        if not cover:
            raise InputError(f"{img_path} and {dems[0]}: extents do not overlap")
        b = _union(cover)
        out = _crop(img_grid, b)
    elif grid == "dem":
        best, best_area = None, 0.0
        for d in dems:
            g = _grid_of(d)
            hit = _intersect(
                g.bounds, transform_bounds(img_grid.crs, g.crs, *img_grid.bounds, densify_pts=21)
            )
            area = (hit[2] - hit[0]) * (hit[3] - hit[1]) if hit else 0.0
            if hit and area > best_area:
                best, best_area = (g, hit), area
        if best is None:
            raise InputError(f"{img_path} and {dems[0]}: extents do not overlap")
        out = _crop(*best)
    else:
        raise InputError(f"unknown grid {grid!r} (dem or image)")
    if out is None:
        raise InputError(f"{img_path} and {dems[0]}: extents overlap by less than one pixel")
    return out


class AlignedScene(contextlib.AbstractContextManager):
    """An image scene, its DEMs and optional extra layers and cloud masks on one grid.

    ``read(window)`` returns ``(image (C, h, w), height (h, w) float32 metres, NaN where
    invalid, valid (h, w) bool, extra (E, h, w) float32, NaN where invalid)``. Several DEMs
    are mosaicked: the first one valid at a pixel wins. Extra layer ``i`` is multiplied by
    ``extra_scales[i]`` (``z_scale`` for height layers such as an initial DSM, 1 otherwise);
    A multi-band extra layer contributes all its bands, in order (:attr:`extra_band_counts`).
    Its nodata, NaN/inf and edges make the pixel invalid like any other input, unless
    ``extra_gaps[i]`` is True: then they are gaps of that layer alone (NaN in ``extra``,
    e.g. the holes of a stereo DSM, which a refinement network fills) and the pixel stays
    valid.
    """

    def __init__(
        self,
        scene: ImageScene,
        dems: Sequence[str | Path],
        grid: Grid,
        *,
        z_scale: float = 1.0,
        cloud_masks: Sequence[str | Path] = (),
        extras: Sequence[str | Path] = (),
        extra_scales: Sequence[float] | None = None,
        image_method: str = "auto",
        extra_gaps: Sequence[bool] | None = None,
    ) -> None:
        self.scene, self.grid, self.z_scale = scene, grid, z_scale
        self.extra_gaps = [False] * len(extras) if extra_gaps is None else list(extra_gaps)
        if len(self.extra_gaps) != len(extras):
            raise ValueError("extra_gaps needs one flag per extra layer")
        self.extra_scales = [1.0] * len(extras) if extra_scales is None else list(extra_scales)
        if len(self.extra_scales) != len(extras):
            raise ValueError("extra_scales needs one factor per extra layer")
        self._stack = contextlib.ExitStack()
        try:
            self._files: dict[Path, Any] = {}
            self._img_layers = []
            for f in scene.files:
                ds = self._open(f)
                rs = resampling_for(CONTINUOUS, shrink_factor(ds, grid), image_method)
                layer = Layer(f, ds, grid, rs)
                self._img_layers.append((layer, [b.index for b in scene.bands if b.path == f]))
            self._dems = [self._layer(Path(d), grid, CONTINUOUS) for d in dems]
            self._extras = [self._layer(Path(e), grid, CONTINUOUS) for e in extras]
            self._clouds = [self._layer(Path(c), grid, MASK) for c in cloud_masks]
            self.extra_band_counts = [int(layer.ds.count) for layer in self._extras]
            self.image_dtype = np.result_type(
                *[ds.dtypes[0] for ds in self._files.values()][: len(scene.files)]
            )
        except BaseException:
            self.close()
            raise

    def _layer(self, path: Path, grid: Grid, kind: str) -> Layer:
        ds = self._open(path)
        return Layer(path, ds, grid, resampling_for(kind, shrink_factor(ds, grid)))

    @property
    def resampling(self) -> dict[str, Any]:
        """The resampling of every input, by name ("none": read directly, same grid)."""
        return {
            "image": [layer.method for layer, _ in self._img_layers],
            "dems": [layer.method for layer in self._dems],
            "extras": [layer.method for layer in self._extras],
            "cloud_masks": [layer.method for layer in self._clouds],
        }

    def _open(self, path: Path) -> Any:
        ds = self._stack.enter_context(open_raster(path))
        require_crs(ds, path)
        self._files[path] = ds
        return ds

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        h, w = int(window.height), int(window.width)
        order = {(b.path, b.index): i for i, b in enumerate(self.scene.bands)}
        image = np.zeros((len(self.scene.bands), h, w), self.image_dtype)
        valid = np.ones((h, w), bool)
        for layer, bidx in self._img_layers:
            data, ok = layer.read(bidx, window)
            for j, b in enumerate(bidx):
                image[order[(layer.path, b)]] = data[j]
            valid &= ok
        height = np.full((h, w), np.nan, np.float32)
        for layer in self._dems:
            data, ok = layer.read([1], window)
            fill = ok & np.isnan(height)
            height[fill] = data[0][fill].astype(np.float32) * np.float32(self.z_scale)
        valid &= np.isfinite(height)
        extra = np.zeros((sum(self.extra_band_counts), h, w), np.float32)
        j = 0
        for i, layer in enumerate(self._extras):
            n = self.extra_band_counts[i]
            data, ok = layer.read(list(range(1, n + 1)), window)
            extra[j : j + n] = data.astype(np.float32) * np.float32(self.extra_scales[i])
            if self.extra_gaps[i]:
                extra[j : j + n, ~ok] = np.nan
            else:
                valid &= ok
            j += n
        for layer in self._clouds:
            data, ok = layer.read([1], window)
            valid &= ~(ok & (data[0] != 0))
        height[~valid] = np.nan
        extra[:, ~valid] = np.nan
        return image, height, valid, extra

    def close(self) -> None:
        for layer, _ in getattr(self, "_img_layers", []):
            layer.close()
        for layer in [
            *getattr(self, "_dems", []),
            *getattr(self, "_extras", []),
            *getattr(self, "_clouds", []),
        ]:
            layer.close()
        self._stack.close()

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = [
    "AVERAGE_FROM_SHRINK",
    "AlignedScene",
    "BandRef",
    "FEET_TO_METRES",
    "Grid",
    "ImageScene",
    "detect_z_unit",
    "image_resampling",
    "image_scenes",
    "open_checked",
    "resampling_for",
    "scene_grid",
]
