"""Raster I/O: open with clear errors, read windows, and write GeoTIFFs atomically.

Every file demgen writes goes to a temporary name in the destination folder and is
renamed into place only when complete, so a crash or Ctrl-C never leaves a
half-written raster behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from demgen.errors import InputError, MissingCRSError, first_line
from demgen.io.geodesy import VERTICAL_CRS_TAG

# demgen's nodata for float rasters (DEMs, predictions, stereo holes, lidar grids): the one
# definition; every writer and reader of "no height here" imports it from here.
NODATA = -9999.0


def require_crs(ds: Any, path: str | os.PathLike, what: str = "raster") -> None:
    """Raise :class:`~demgen.errors.MissingCRSError` naming ``path`` when ``ds`` has no CRS."""
    if ds.crs is None:
        raise MissingCRSError(f"{path}: {what} has no CRS (georeferencing is required)")


_require_crs = require_crs  # read_raster's keyword of the same name shadows the function


def band_names(ds: Any) -> list[str]:
    """Each band's description, or ``band<n>`` (1-based) for a band without one."""
    return [d or f"band{i + 1}" for i, d in enumerate(ds.descriptions)]


#: The true-colour bands (red, green, blue) of Sentinel-2 and demgen's synthetic images.
TRUE_COLOUR = ("B4", "B3", "B2")


def true_colour_indices(bands: Sequence[str]) -> list[int]:
    """0-based (red, green, blue) band indices for a colour composite: B4, B3, B2 by name
    when all are present, else the first three bands, else band 1 three times (grey)."""
    if all(b in bands for b in TRUE_COLOUR):
        return [list(bands).index(b) for b in TRUE_COLOUR]
    return [0, 1, 2] if len(bands) >= 3 else [0, 0, 0]


def default_band_names(count: int) -> list[str]:
    """Names for ``count`` undescribed bands: red, green, blue for three, else band1 ..."""
    return ["red", "green", "blue"] if count == 3 else [f"band{i + 1}" for i in range(count)]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Move the finished folder ``tmp`` to ``out``; an existing ``out`` is swapped out (and
    deleted) only now, so a crash earlier leaves the old folder whole."""
    import shutil

    tmp, out = Path(tmp), Path(out)
    if out.exists():
        trash = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; it becomes ``out`` (replacing an
    existing one, :func:`replace_dir`) only when the block succeeds, and is removed if not."""
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (JSON, Markdown)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def geotiff_profile(
    *,
    width: int,
    height: int,
    count: int,
    dtype: str | np.dtype,
    crs: CRS | str | None,
    transform: Affine,
    nodata: float | None = None,
    block: int = 256,
) -> dict[str, Any]:
    """A tiled, deflate-compressed GeoTIFF profile (predictor chosen for the dtype)."""
    dtype = np.dtype(dtype)
    tiled = width >= block and height >= block
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": int(width),
        "height": int(height),
        "count": int(count),
        "dtype": dtype.name,
        "crs": CRS.from_user_input(crs) if crs is not None else None,
        "transform": transform,
        "compress": "deflate",
        "predictor": 3 if dtype.kind == "f" else 2,
        "BIGTIFF": "IF_SAFER",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


@contextlib.contextmanager
def open_writer(
    path: str | os.PathLike,
    profile: dict[str, Any],
    *,
    descriptions: Sequence[str] | None = None,
    units: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    vertical_crs: str | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a GeoTIFF for windowed writes; it appears at ``path`` only if the block succeeds.

    ``vertical_crs`` (for height rasters) is written as the ``vertical_crs`` dataset tag,
    which :func:`demgen.io.geodesy.vertical_crs_of` reads back: the datum name
    ("EGM2008 height"), or ``"unknown"`` when the heights have none (synthetic scenes).
    """
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
        for i, u in enumerate(units or [], start=1):
            dst.set_band_unit(i, u)
        all_tags = dict(tags or {})
        if vertical_crs is not None:
            all_tags[VERTICAL_CRS_TAG] = str(vertical_crs)
        if all_tags:
            dst.update_tags(**all_tags)
        yield dst


def write_raster(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    crs: CRS | str | None,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    units: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    vertical_crs: str | None = None,
) -> Path:
    """Write a (H, W) or (bands, H, W) array as a GeoTIFF, atomically.

    ``vertical_crs``: the heights' vertical datum, stored as a tag (see :func:`open_writer`).
    """
    arr = array[None] if array.ndim == 2 else array
    profile = geotiff_profile(
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    )
    with open_writer(
        path, profile, descriptions=descriptions, units=units, tags=tags, vertical_crs=vertical_crs
    ) as dst:
        dst.write(arr)
    return Path(path)


@contextlib.contextmanager
def open_raster(path: str | os.PathLike) -> Iterator[rasterio.io.DatasetReader]:
    """Open a raster for reading; unreadable files raise InputError naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({first_line(exc)})") from exc
    with ds:
        yield ds


def read_raster(
    path: str | os.PathLike,
    *,
    bands: Sequence[int] | None = None,
    window: Window | None = None,
    dtype: str | np.dtype | None = None,
    require_crs: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read bands (1-based) of a raster as (bands, H, W) with its georeferencing profile."""
    with open_raster(path) as ds:
        if require_crs:
            _require_crs(ds, path)
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
        bad = [b for b in idx if not 1 <= b <= ds.count]
        if bad:
            raise InputError(f"{path}: band {bad[0]} does not exist (file has {ds.count})")
        try:
            arr = ds.read(idx, window=window)
        except RasterioIOError as exc:
            raise InputError(f"{path}: read failed ({first_line(exc)})") from exc
        profile = dict(ds.profile)
        profile["descriptions"] = [ds.descriptions[i - 1] for i in idx]
        if window is not None:
            profile["transform"] = ds.window_transform(window)
            profile["height"], profile["width"] = arr.shape[1:]
        profile["count"] = len(idx)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr, profile


def same_grid(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-6) -> bool:
    """True when two profiles share CRS, shape and transform (to ``tol`` of a pixel)."""
    if (a["width"], a["height"]) != (b["width"], b["height"]):
        return False
    if CRS.from_user_input(a["crs"]) != CRS.from_user_input(b["crs"]):
        return False
    ta, tb = a["transform"], b["transform"]
    px = max(abs(ta.a), abs(ta.e))
    return all(abs(x - y) <= tol * px for x, y in zip(ta[:6], tb[:6], strict=True))


def write_cog(src_path: str | os.PathLike, dst_path: str | os.PathLike) -> Path:
    """Copy a GeoTIFF to a Cloud-Optimized GeoTIFF (deflate, internal overviews), atomically."""
    from rasterio.shutil import copy as rio_copy

    with atomic_path(dst_path) as tmp:
        rio_copy(
            src_path, tmp, driver="COG", COMPRESS="DEFLATE", OVERVIEWS="AUTO",
            OVERVIEW_RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER",
        )  # fmt: skip
    return Path(dst_path)


def pixel_size_metres(ds: rasterio.io.DatasetReader) -> float:
    """Pixel side in metres: the geometric mean of x and y (:mod:`demgen.io.geodesy`)."""
    from demgen.io.geodesy import mean_pixel_size_m, pixel_size_m_of

    return mean_pixel_size_m(pixel_size_m_of(ds))


GDAL_CACHE_MB = 256  # GDAL's default block cache is 5 % of RAM: 1.2 GB on a 24 GB machine


def bounded_gdal_cache(megabytes: int = GDAL_CACHE_MB) -> rasterio.Env:
    """A rasterio environment whose GDAL block cache is capped, for bounded-memory streaming."""
    return rasterio.Env(GDAL_CACHEMAX=int(megabytes))


def grid_bounds(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a pixel grid, whatever the signs of its pixel sizes."""
    xs = (transform.c, transform.c + transform.a * width)
    ys = (transform.f, transform.f + transform.e * height)
    return min(xs), min(ys), max(xs), max(ys)
