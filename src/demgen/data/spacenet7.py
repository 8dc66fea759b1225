"""Import SpaceNet 7 (Multi-Temporal Urban Development) areas into demgen's time-series layout.

SpaceNet 7 (Van Etten et al. 2021, CVPR, "The Multi-Temporal Urban Development SpaceNet
Dataset") holds, per area of interest, ~24 monthly Planet mosaics (4.77 m, uint8 RGB plus an
alpha band) and building footprints per month::

    AREA/images_masked/global_monthly_2018_01_mosaic_L15-0331E-1257N_1327_3160_13.tif
    AREA/labels_match_pix/global_monthly_2018_01_mosaic_L15-0331E-1257N_1327_3160_13_Buildings.geojson

``images_masked`` has cloudy areas (Planet's unusable-data mask) blanked; ``labels_match_pix``
polygons are in the pixel coordinates (x = column, y = row, origin at the image's upper-left
corner) of the matching image. Each area becomes a folder of :mod:`demgen.data.timelayout`:
``tNN/image.tif`` (the mosaic's RGB, uint8, georeferencing kept), ``tNN/buildings.tif``
(footprints rasterized, pixel-centre rule), ``tNN/clouds.tif`` (alpha 0, or all-black where
there is no alpha band) and ``times.json`` (dates from the file names: the first of the month).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.features import rasterize
from rasterio.transform import Affine

from demgen.data.timelayout import TIMES_FILE, frame_dir_name, times_document
from demgen.errors import InputError
from demgen.io.jsonio import write_json
from demgen.io.raster import atomic_dir, read_raster, write_raster

SN7_IMAGE = re.compile(r"^global_monthly_(\d{4})_(\d{2})_mosaic_(.+)\.tif$")
IMAGES_DIR = "images_masked"
LABELS_DIR = "labels_match_pix"
LABEL_SUFFIX = "_Buildings.geojson"
SN7_BANDS: tuple[str, ...] = ("R", "G", "B")


def parse_sn7_name(name: str) -> tuple[dt.date, str]:
    """(date, area id) of a SpaceNet 7 mosaic file name; the date is the mosaic's month, day 1."""
    m = SN7_IMAGE.match(name)
    if m is None:
        raise InputError(f"{name}: not a SpaceNet 7 mosaic name (global_monthly_YYYY_MM_mosaic_*)")
    year, month = int(m.group(1)), int(m.group(2))
    if not 1 <= month <= 12:
        raise InputError(f"{name}: month {month} is not 1-12")
    return dt.date(year, month, 1), m.group(3)


def _xy(coords: Any) -> Any:
    """Coordinates with any third (z) value dropped, nesting kept."""
    if coords and isinstance(coords[0], int | float):
        return [float(coords[0]), float(coords[1])]
    return [_xy(c) for c in coords]


def read_building_shapes(path: Path) -> list[dict[str, Any]]:
    """Polygon / MultiPolygon geometries of a SpaceNet 7 pixel-space Buildings GeoJSON."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable GeoJSON ({exc})") from exc
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list):
        raise InputError(f"{path}: no FeatureCollection features")
    out = []
    for feat in feats:
        geom = (feat or {}).get("geometry")
        if not geom or not geom.get("coordinates"):
            continue  # SpaceNet writes empty geometries for some months
        if geom.get("type") not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{path}: geometry type {geom.get('type')!r} is not a polygon")
        out.append({"type": geom["type"], "coordinates": _xy(geom["coordinates"])})
    return out


def rasterize_buildings(shapes: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """uint8 0/1 mask of pixel-space polygons: a pixel is 1 when its centre lies inside one."""
    if not shapes:
        return np.zeros(shape, dtype=np.uint8)
    return rasterize(
        [(g, 1) for g in shapes], out_shape=shape, transform=Affine.identity(), fill=0,
        dtype="uint8",
    )  # fmt: skip


def _area_images(area: Path) -> list[tuple[dt.date, str, Path]]:
    imgs = area / IMAGES_DIR
    if not imgs.is_dir():
        raise InputError(f"{area}: no {IMAGES_DIR}/ folder (not a SpaceNet 7 area)")
    found = []
    for p in sorted(imgs.glob("*.tif")):
        date, aid = parse_sn7_name(p.name)
        found.append((date, aid, p))
    if not found:
        raise InputError(f"{imgs}: no global_monthly_*_mosaic_*.tif images")
    found.sort(key=lambda x: x[0])
    for (d0, _, p0), (d1, _, p1) in zip(found, found[1:], strict=False):
        if d0 == d1:
            raise InputError(f"{imgs}: two mosaics for {d0:%Y-%m} ({p0.name}, {p1.name})")
    return found


def import_spacenet7_area(area_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert one SpaceNet 7 area folder to a demgen time series at `out_dir` (atomically).

    Every mosaic needs its ``*_Buildings.geojson`` in ``labels_match_pix``; all mosaics must
    share one grid. The folder is built beside `out_dir` and renamed into place at the end.
    """
    area = Path(area_dir)
    found = _area_images(area)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        frames, grid = [], None
        for i, (date, _, path) in enumerate(found):
            label = area / LABELS_DIR / (path.stem + LABEL_SUFFIX)
            if not label.exists():
                raise InputError(f"{label}: no such file (labels of {path.name})")
            arr, prof = read_raster(path, require_crs=False)
            if arr.shape[0] not in (3, 4):
                raise InputError(f"{path}: {arr.shape[0]} bands, expected RGB or RGBA")
            g = (arr.shape[1:], prof["crs"], prof["transform"])
            if grid is None:
                grid = g
            elif g != grid:
                raise InputError(f"{path}: grid differs from the first mosaic of {area.name}")
            rgb = arr[:3].astype(np.uint8, copy=False)
            masked = arr[3] == 0 if arr.shape[0] == 4 else (rgb == 0).all(axis=0)
            shapes = read_building_shapes(label)
            mask = rasterize_buildings(shapes, rgb.shape[1:])
            fdir = tmp / frame_dir_name(i, len(found))
            kw = {"crs": prof["crs"], "transform": prof["transform"]}
            write_raster(fdir / "image.tif", rgb, descriptions=list(SN7_BANDS),
                         tags={"date": date.isoformat(), "source": path.name}, **kw)  # fmt: skip
            write_raster(fdir / "buildings.tif", mask, descriptions=["buildings"], **kw)
            write_raster(fdir / "clouds.tif", masked.astype(np.uint8), descriptions=["clouds"],
                         **kw)  # fmt: skip
            frames.append({
                "cloud_fraction": round(float(masked.mean()), 6),
                "source_image": f"{IMAGES_DIR}/{path.name}",
                "labels": f"{LABELS_DIR}/{label.name}",
                "n_buildings": len(shapes),
                "building_pixels": int(mask.sum()),
            })  # fmt: skip
        assert grid is not None
        (h, w), crs, transform = grid
        doc = times_document(
            source="spacenet7", dates=[f[0] for f in found], frames=frames, bands=SN7_BANDS,
            reflectance_scale=None, crs=crs.to_string() if crs else None,
            transform=list(transform), width=w, height=h,
            extra={"area": found[0][1], "date_rule": "first day of the mosaic's month",
                   "cloud_mask": "alpha band 0 (Planet UDM, blanked in images_masked)"},
        )  # fmt: skip
        write_json(tmp / TIMES_FILE, doc)
    return out


def import_spacenet7(root: str | Path, out_dir: str | Path) -> list[Path]:
    """Import every area under `root` (folders holding images_masked/) to OUT/<area>/.

    `root` may also be a single area folder. Returns the written folders, sorted by area.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    areas = [root] if (root / IMAGES_DIR).is_dir() else sorted(
        p for p in root.iterdir() if (p / IMAGES_DIR).is_dir()
    )  # fmt: skip
    if not areas:
        raise InputError(f"{root}: no SpaceNet 7 area folders (with {IMAGES_DIR}/) inside")
    return [import_spacenet7_area(a, Path(out_dir) / a.name) for a in areas]
