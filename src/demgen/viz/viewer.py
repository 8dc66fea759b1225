"""Interactive 3D terrain viewer: one self-contained, offline HTML file.

``render_view`` reads a DEM (and optionally an image to drape and a second DEM to
compare), decimates the DEM to a mesh the browser handles (at most
``max_vertices`` per side, block-averaged), renders three textures on the DEM grid
(the image reprojected onto it, a hillshade and a colour relief) and writes one
HTML page that embeds the data and the vendored three.js (r184, MIT, see
``vendor/three/``). Nothing is fetched at view time: the page works from a
``file://`` URL without a network.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.fill import fillnodata
from rasterio.transform import Affine
from rasterio.warp import reproject, transform_bounds

from demgen.errors import InputError
from demgen.io.geodesy import pixel_size_m
from demgen.io.jsonio import to_plain
from demgen.io.raster import grid_bounds, open_raster, write_text_atomic
from demgen.viz.hillshade import hillshade

LAYERS = ("image", "hillshade", "relief")
NODATA_GREY = 0.35
RELIEF_CMAP = "terrain"
# The low quarter of matplotlib's "terrain" is sea blue; land heights start above it.
RELIEF_RANGE = (0.25, 1.0)
SUN_AZIMUTH = 315.0
SUN_ALTITUDE = 45.0


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and shape (rows, cols)."""

    crs: CRS
    transform: Affine
    height: int
    width: int

    def scaled(self, height: int, width: int) -> Grid:
        """The same extent sampled with ``height`` x ``width`` cells."""
        t = self.transform * Affine.scale(self.width / width, self.height / height)
        return Grid(self.crs, t, height, width)

    def pixel_size_m(self) -> tuple[float, float]:
        """Pixel size (x, y) in metres at the centre (:func:`demgen.io.geodesy.pixel_size_m`).

        Geographic grids use the WGS84 degree lengths at the centre latitude, so the mesh's
        horizontal scale, and with it slopes and the vertical exaggeration, match the
        ground (a 1 arc-second grid at 45 N is 21.90 x 30.87 m).
        """
        return pixel_size_m(self.crs, self.transform, self.width, self.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return grid_bounds(self.transform, self.width, self.height)


@dataclass
class ViewInfo:
    """What ``render_view`` wrote: sizes, decimation and height range (metres)."""

    path: Path
    source_shape: tuple[int, int]
    mesh_shape: tuple[int, int]
    texture_shape: tuple[int, int]
    decimation: float
    height_min: float
    height_max: float
    layers: list[str] = field(default_factory=list)
    compare_range: tuple[float, float] | None = None


def fit_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(rows, cols) no larger than ``max_side`` per side, keeping the aspect ratio."""
    scale = max(height, width) / max_side
    if scale <= 1:
        return height, width
    return max(2, round(height / scale)), max(2, round(width / scale))


def _nodata_of(ds: rasterio.io.DatasetReader) -> float | None:
    if ds.nodata is not None:
        return float(ds.nodata)
    return -9999.0 if np.dtype(ds.dtypes[0]).kind in "fi" else None


def _invalid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    bad = ~np.isfinite(values) | (values == -9999.0)
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
class _Dem:
    path: Path
    grid: Grid
    nodata: float | None
    zmin: float
    zmax: float


def _open_dem(path: str | Path) -> _Dem:
    path = Path(path)
    with open_raster(path) as ds:
        if ds.crs is None:
            raise InputError(f"{path}: raster has no CRS (georeferencing is required)")
        nodata = _nodata_of(ds)
        zmin, zmax = _dem_range(ds, nodata)
        grid = Grid(ds.crs, ds.transform, ds.height, ds.width)
    return _Dem(path, grid, nodata, zmin, zmax)


def _dem_on(dem: _Dem, grid: Grid) -> np.ndarray:
    with open_raster(dem.path) as ds:
        return _warp_band(ds, 1, grid, dem.nodata)


def _filled(z: np.ndarray) -> np.ndarray:
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


def _select_bands(path: Path, count: int, descriptions, bands: Sequence[int] | None) -> list[int]:
    if bands:
        if len(bands) not in (1, 3):
            raise InputError(f"--bands: give 1 or 3 band numbers, got {len(bands)}")
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise InputError(f"{path}: band {bad[0]} does not exist (file has {count})")
        return list(bands)
    desc = [d or "" for d in descriptions]
    if all(b in desc for b in ("B4", "B3", "B2")):
        return [desc.index(b) + 1 for b in ("B4", "B3", "B2")]
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
            if ds.crs is None:
                raise InputError(f"{path}: raster has no CRS (georeferencing is required)")
            left, bottom, right, top = transform_bounds(ds.crs, grid.crs, *ds.bounds)
            gl, gb, gr, gt = grid.bounds
            if left >= gr or right <= gl or bottom >= gt or top <= gb:
                raise InputError(f"{path}: the image does not overlap the DEM")
            idx = _select_bands(path, ds.count, ds.descriptions, bands) if len(paths) == 1 else [1]
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
    hs = hillshade(_filled(z), grid.pixel_size_m(), SUN_AZIMUTH, SUN_ALTITUDE)
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


def _vendor_modules() -> dict[str, str]:
    root = resources.files("demgen.viz") / "vendor" / "three"
    return {
        "core": (root / "three.core.min.js").read_text(encoding="utf-8"),
        "module": (root / "three.module.min.js").read_text(encoding="utf-8"),
        "orbit": (root / "OrbitControls.js").read_text(encoding="utf-8"),
    }


def _json_for_script(obj) -> str:
    # Strict JSON (NaN -> null: JSON.parse refuses NaN). "</" inside a <script> element would
    # end it; "<\/" is the same JSON string.
    return json.dumps(to_plain(obj), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _fmt_m(v: float) -> str:
    return f"{v:,.1f} m" if abs(v) < 10_000 else f"{v:,.0f} m"


def render_view(
    dem: str | Path,
    out: str | Path,
    *,
    images: Sequence[str | Path] = (),
    bands: Sequence[int] | None = None,
    compare: str | Path | None = None,
    max_vertices: int = 512,
    max_texture: int = 2048,
    title: str | None = None,
    overwrite: bool = False,
) -> ViewInfo:
    """Write the interactive 3D view of ``dem`` to ``out`` (HTML) and describe it."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists (pass --overwrite to replace it)")
    if out.is_dir():
        raise InputError(f"{out} is a folder, not an HTML file name")
    if max_vertices < 2 or max_texture < 2:
        raise InputError("--max-vertices and --texture-size must be at least 2")
    main = _open_dem(dem)
    src = main.grid
    mesh_grid = src.scaled(*fit_shape(src.height, src.width, max_vertices))
    tex_grid = src.scaled(*fit_shape(src.height, src.width, max(max_texture, max_vertices)))
    decimation = max(src.height / mesh_grid.height, src.width / mesh_grid.width)

    dems = [main]
    if compare is not None:
        other = _open_dem(compare)
        left, bottom, right, top = transform_bounds(other.grid.crs, src.crs, *other.grid.bounds)
        gl, gb, gr, gt = src.bounds
        if left >= gr or right <= gl or bottom >= gt or top <= gb:
            raise InputError(f"{other.path}: the comparison DEM does not overlap {main.path}")
        dems.append(other)
    zmin = min(d.zmin for d in dems)
    zmax = max(d.zmax for d in dems)

    drape = png_data_uri(drape_image(images, tex_grid, bands)) if images else None
    views = []
    for d in dems:
        z_mesh = _dem_on(d, mesh_grid)
        if not np.isfinite(z_mesh).any():
            raise InputError(f"{d.path}: no valid heights on the view grid")
        z_tex = _dem_on(d, tex_grid)
        textures = {
            "hillshade": png_data_uri(shaded(z_tex, tex_grid)),
            "relief": png_data_uri(relief_colours(z_tex, zmin, zmax)),
        }
        if drape:
            textures["image"] = drape
        heights = _filled(z_mesh).astype("<f4")
        views.append(
            {
                "name": d.path.name,
                "label": "DEM" if d is main else "Compare",
                "zmin": d.zmin,
                "zmax": d.zmax,
                "heights": base64.b64encode(heights.tobytes()).decode("ascii"),
                "textures": textures,
            }
        )

    w_m, h_m = (p * n for p, n in zip(src.pixel_size_m(), (src.width, src.height), strict=True))
    relief = max(zmax - zmin, 1e-6)
    # Default exaggeration: make the relief about 6 % of the larger horizontal extent.
    exaggeration = float(np.clip(0.06 * max(w_m, h_m) / relief, 1.0, 50.0))
    layers = [lay for lay in LAYERS if lay in views[0]["textures"]]
    ny, nx = mesh_grid.height, mesh_grid.width
    if decimation > 1:
        decim_text = (
            f"Mesh {nx} x {ny} vertices, decimated {decimation:.1f}x from "
            f"{src.width} x {src.height} px (block average)"
        )
    else:
        decim_text = f"Mesh {nx} x {ny} vertices: full resolution ({src.width} x {src.height} px)"
    px, py = src.pixel_size_m()
    data = {
        "nx": nx,
        "ny": ny,
        "extent_m": [w_m, h_m],
        "zmin": zmin,
        "zmax": zmax,
        "exaggeration": round(exaggeration, 1),
        "layers": layers,
        "default_layer": "image" if "image" in layers else "relief",
        "views": views,
    }
    page_title = title or (
        f"{main.path.name} vs {dems[1].path.name}" if compare else main.path.name
    )
    info = (
        f"Textures {tex_grid.width} x {tex_grid.height} px; "
        f"pixel {px:.3g} x {py:.3g} m; extent {w_m / 1000:.2f} x {h_m / 1000:.2f} km; "
        f"CRS {src.crs.to_string()}"
    )
    if images:
        info += "; image: " + ", ".join(Path(p).name for p in images)
        if bands:
            info += " bands " + ",".join(str(b) for b in bands)
    stops = relief_gradient_stops()
    ticks = "".join(
        f'<span style="bottom:{100 * i / 4:.0f}%">{_fmt_m(zmin + (zmax - zmin) * i / 4)}</span>'
        for i in (1, 2, 3)
    )
    page = (
        _template()
        .replace("__TITLE__", html.escape(page_title))
        .replace("__INFO__", html.escape(info))
        .replace("__DECIMATION__", html.escape(decim_text))
        .replace("__ZMIN__", html.escape(_fmt_m(zmin)))
        .replace("__ZMAX__", html.escape(_fmt_m(zmax)))
        .replace("__ZMIN_RAW__", repr(zmin))
        .replace("__ZMAX_RAW__", repr(zmax))
        .replace("__TICKS__", ticks)
        .replace("__GRADIENT__", ", ".join(stops[::-1]))
        .replace(
            "__SUN__", f"sun azimuth {SUN_AZIMUTH:.0f}\u00b0, altitude {SUN_ALTITUDE:.0f}\u00b0"
        )
        .replace("__MODULES__", _json_for_script(_vendor_modules()))
        .replace("__DATA__", _json_for_script(data))
    )
    write_text_atomic(out, page)
    return ViewInfo(
        path=out,
        source_shape=(src.height, src.width),
        mesh_shape=(ny, nx),
        texture_shape=(tex_grid.height, tex_grid.width),
        decimation=decimation,
        height_min=zmin,
        height_max=zmax,
        layers=layers,
        compare_range=(dems[1].zmin, dems[1].zmax) if compare else None,
    )


def _template() -> str:
    return (resources.files("demgen.viz") / "viewer_template.html").read_text(encoding="utf-8")
