"""The 3D viewer's rasters: the DEM read onto a grid, the draped image, hillshade, relief.

Everything here works on one :class:`~demgen.io.grid.Grid` (the DEM's, decimated for the
mesh or the textures) and returns plain arrays; :mod:`demgen.viz.viewer` turns them into
PNG textures and one HTML page.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.fill import fillnodata
from rasterio.warp import reproject, transform_bounds

from demgen.errors import InputError
from demgen.io.grid import Grid
from demgen.io.raster import NODATA, band_names, open_raster, require_crs
from demgen.viz.hillshade import hillshade

NODATA_GREY = 0.35
RELIEF_CMAP = "terrain"
# The low quarter of matplotlib's "terrain" is sea blue; land heights start above it.
RELIEF_RANGE = (0.25, 1.0)
SUN_AZIMUTH = 315.0
SUN_ALTITUDE = 45.0


def fit_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(rows, cols) no larger than ``max_side`` per side, keeping the aspect ratio."""
    scale = max(height, width) / max_side
    if scale <= 1:
        return height, width
    return max(2, round(height / scale)), max(2, round(width / scale))


def _nodata_of(ds: rasterio.io.DatasetReader) -> float | None:
    if ds.nodata is not None:
        return float(ds.nodata)
    return NODATA if np.dtype(ds.dtypes[0]).kind in "fi" else None


def _invalid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    bad = ~np.isfinite(values) | (values == NODATA)
    if nodata is not None and not np.isnan(nodata):
        bad |= values == nodata
    return bad


def _dem_range(ds: rasterio.io.DatasetReader, nodata: float | None) -> tuple[float, float]:
    """Min and max of the valid heights at full resolution, read in row strips."""
    lo, hi = np.inf, -np.inf
    step = max(1, 4_000_000 // max(ds.width, 1))
    for row in range(0, ds.height, step):
        win = rasterio.windows.Window(0, row, ds.width, min(step, ds.height - row))
        a = ds.read(1, window=win).astype(np.float64)
        a = a[~_invalid(a, nodata)]
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if not np.isfinite(lo):
        raise InputError(f"{ds.name}: the DEM has no valid heights (all nodata)")
    return lo, hi


def _warp_band(ds, band: int, grid: Grid, nodata: float | None) -> np.ndarray:
    """One band of ``ds`` resampled onto ``grid`` as float32, invalid cells NaN."""
    dst = np.full((grid.height, grid.width), np.nan, dtype=np.float32)
    # Block average when decimating on the same CRS; bilinear otherwise.
    coarser = abs(grid.transform.a) >= abs(ds.transform.a) * 0.999
    resampling = Resampling.average if ds.crs == grid.crs and coarser else Resampling.bilinear
    src = ds.read(band).astype(np.float32)
    src[_invalid(src, nodata)] = np.nan
    reproject(
        source=src,
        destination=dst,
        src_transform=ds.transform,
        src_crs=ds.crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=resampling,
    )
    return dst


@dataclass
class DemSource:
    """A DEM file with its grid, nodata and valid height range (metres)."""

    path: Path
    grid: Grid
    nodata: float | None
    zmin: float
    zmax: float


def open_dem(path: str | Path) -> DemSource:
    """Open a DEM (CRS required) and read its grid, nodata and valid height range."""
    path = Path(path)
    with open_raster(path) as ds:
        require_crs(ds, path)
        nodata = _nodata_of(ds)
        zmin, zmax = _dem_range(ds, nodata)
        grid = Grid(ds.crs, ds.transform, width=ds.width, height=ds.height)
    return DemSource(path, grid, nodata, zmin, zmax)


def dem_on_grid(dem: DemSource, grid: Grid) -> np.ndarray:
    """The DEM's heights resampled onto ``grid`` (float32, NaN where there is no data)."""
    with open_raster(dem.path) as ds:
        return _warp_band(ds, 1, grid, dem.nodata)


def fill_gaps(z: np.ndarray) -> np.ndarray:
    """Heights with nodata filled from the nearest valid cells (no spikes, no pits)."""
    valid = np.isfinite(z)
    if valid.all():
        return z
    if not valid.any():
        raise InputError("no valid heights on the view grid")
    out = fillnodata(
        np.where(valid, z, 0).astype(np.float32),
        mask=valid.astype(np.uint8),
        max_search_distance=float(max(z.shape)),
    )
    still = ~np.isfinite(out) | (~valid & (out == 0) & (np.nanmin(z[valid]) > 0))
    out[still] = float(np.nanmean(z[valid]))
    return out


def stretch(band: np.ndarray, lo_pct: float = 2.0, hi_pct: float = 98.0) -> np.ndarray:
    """Linear 2-98 % stretch of the finite values to [0, 1]; NaN stays NaN."""
    v = band[np.isfinite(band)]
    if v.size == 0:
        return np.full(band.shape, np.nan, dtype=np.float32)
    lo, hi = np.percentile(v, [lo_pct, hi_pct])
    return np.clip((band - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)


def _select_bands(
    path: Path, count: int, names: Sequence[str], bands: Sequence[int] | None
) -> list[int]:
    """1-based R, G, B band indices: ``bands`` as given, else B4, B3, B2 by name, else 1-3."""
    if bands:
        if len(bands) not in (1, 3):
            raise InputError(f"--bands: give 1 or 3 band numbers, got {len(bands)}")
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise InputError(f"{path}: band {bad[0]} does not exist (file has {count})")
        return list(bands)
    if all(b in names for b in ("B4", "B3", "B2")):
        return [list(names).index(b) + 1 for b in ("B4", "B3", "B2")]
    return [1, 2, 3] if count >= 3 else [1]


def drape_image(
    images: Sequence[str | Path], grid: Grid, bands: Sequence[int] | None = None
) -> np.ndarray:
    """RGB (H, W, 3) in [0, 1] of ``images`` reprojected onto ``grid``, 2-98 % stretched.

    One file: ``bands`` (1-based, R,G,B) or B4,B3,B2 by description or the first three.
    Several files: one band each, in R,G,B order. Cells without data are NaN.
    """
    paths = [Path(p) for p in images]
    if len(paths) not in (1, 3):
        raise InputError(
            f"--image: give one multi-band file or three one-band files (R G B), got {len(paths)}"
        )
    if len(paths) > 1 and bands:
        raise InputError("--bands applies to a single multi-band --image, not to one file per band")
    planes = []
    for path in paths:
        with open_raster(path) as ds:
            require_crs(ds, path)
            left, bottom, right, top = transform_bounds(ds.crs, grid.crs, *ds.bounds)
            gl, gb, gr, gt = grid.bounds
            if left >= gr or right <= gl or bottom >= gt or top <= gb:
                raise InputError(f"{path}: the image does not overlap the DEM")
            idx = _select_bands(path, ds.count, band_names(ds), bands) if len(paths) == 1 else [1]
            nodata = float(ds.nodata) if ds.nodata is not None else None
            for b in idx:
                planes.append(_warp_band(ds, b, grid, nodata))
    rgb = np.stack(planes if len(planes) == 3 else planes * 3, axis=-1)
    valid = np.isfinite(rgb).all(axis=-1)
    if not valid.any():
        raise InputError(f"{paths[0]}: the image has no data over the DEM")
    out = np.stack([stretch(np.where(valid, rgb[..., i], np.nan)) for i in range(3)], axis=-1)
    return out


def relief_colours(z: np.ndarray, zmin: float, zmax: float) -> np.ndarray:
    """Colour relief RGB (H, W, 3) in [0, 1] over [zmin, zmax]; NaN stays NaN."""
    import matplotlib

    cmap = matplotlib.colormaps[RELIEF_CMAP]
    t = np.clip((z - zmin) / max(zmax - zmin, 1e-9), 0, 1)
    a, b = RELIEF_RANGE
    rgb = cmap(a + (b - a) * np.nan_to_num(t))[..., :3].astype(np.float32)
    rgb[~np.isfinite(z)] = np.nan
    return rgb


def relief_gradient_stops(n: int = 11) -> list[str]:
    """CSS colours of the colour relief from low to high, for the legend."""
    import matplotlib

    cmap = matplotlib.colormaps[RELIEF_CMAP]
    a, b = RELIEF_RANGE
    return [matplotlib.colors.to_hex(cmap(a + (b - a) * i / (n - 1))) for i in range(n)]


def shaded(z: np.ndarray, grid: Grid) -> np.ndarray:
    """Hillshade (H, W) in [0, 1] on ``grid`` (true slopes); NaN where there is no data.

    Low-contrast hillshades (gentle relief: 2-98 % spread under 0.3) are stretched
    2-98 % for display; others are shown as computed.
    """
    hs = hillshade(fill_gaps(z), grid.pixel_size_m(), SUN_AZIMUTH, SUN_ALTITUDE)
    lo, hi = np.percentile(hs[np.isfinite(z)], [2, 98]) if np.isfinite(z).any() else (0, 1)
    if hi - lo < 0.3:
        hs = stretch(hs)
    hs[~np.isfinite(z)] = np.nan
    return hs


def png_data_uri(rgb: np.ndarray) -> str:
    """A base64 PNG data URI of an (H, W) or (H, W, 3) array in [0, 1]; NaN -> grey."""
    from matplotlib.image import imsave

    a = np.nan_to_num(np.asarray(rgb, dtype=np.float32), nan=NODATA_GREY)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    buf = io.BytesIO()
    imsave(buf, (np.clip(a, 0, 1) * 255).round().astype(np.uint8), format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
