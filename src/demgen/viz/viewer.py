"""Interactive 3D terrain viewer: one self-contained, offline HTML file.

``render_view`` reads a DEM (and optionally an image to drape and a second DEM to
compare), decimates the DEM to a mesh the browser handles (at most
``max_vertices`` per side, block-averaged), renders three textures on the DEM grid
(the image reprojected onto it, a hillshade and a colour relief) and writes one
HTML page that embeds the data and the vendored three.js (r184, MIT, see
``vendor/three/``). Nothing is fetched at view time: the page works from a
``file://`` URL without a network. The rasters behind the textures come from
:mod:`demgen.viz.textures`.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from rasterio.warp import transform_bounds

from demgen.errors import InputError
from demgen.io.grid import Grid
from demgen.io.jsonio import to_plain
from demgen.io.raster import write_text_atomic
from demgen.viz.textures import (
    NODATA_GREY,
    RELIEF_CMAP,
    RELIEF_RANGE,
    SUN_ALTITUDE,
    SUN_AZIMUTH,
    dem_on_grid,
    drape_image,
    fill_gaps,
    fit_shape,
    open_dem,
    png_data_uri,
    relief_colours,
    relief_gradient_stops,
    shaded,
    stretch,
)

__all__ = [
    "NODATA_GREY",
    "RELIEF_CMAP",
    "RELIEF_RANGE",
    "Grid",
    "ViewInfo",
    "drape_image",
    "fit_shape",
    "relief_colours",
    "render_view",
    "shaded",
    "stretch",
]

LAYERS = ("image", "hillshade", "relief")


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
    main = open_dem(dem)
    src = main.grid
    mesh_grid = src.scaled(*fit_shape(src.height, src.width, max_vertices))
    tex_grid = src.scaled(*fit_shape(src.height, src.width, max(max_texture, max_vertices)))
    decimation = max(src.height / mesh_grid.height, src.width / mesh_grid.width)

    dems = [main]
    if compare is not None:
        other = open_dem(compare)
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
        z_mesh = dem_on_grid(d, mesh_grid)
        if not np.isfinite(z_mesh).any():
            raise InputError(f"{d.path}: no valid heights on the view grid")
        z_tex = dem_on_grid(d, tex_grid)
        textures = {
            "hillshade": png_data_uri(shaded(z_tex, tex_grid)),
            "relief": png_data_uri(relief_colours(z_tex, zmin, zmax)),
        }
        if drape:
            textures["image"] = drape
        heights = fill_gaps(z_mesh).astype("<f4")
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
