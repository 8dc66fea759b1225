"""Synthetic worlds: deterministic, georeferenced, streamed scenes that look like Sentinel-2.

A scene is generated in two tiled passes so peak memory depends on the tile, not the scene:
pass 1 computes terrain (noise + erosion, with a halo of 2 x iterations), land cover, DTM and
DSM per tile; pass 2 renders the image per tile, reading the DSM back with a sun-side halo for
cast shadows. Tiled output is bit-identical to untiled output.

Each scene draws its own climate (:mod:`demgen.data.synth.climate`: tree, snow, rock, farm and
town lines relative to its height range, and an aerosol factor), stored in ``scene.json``, so
colour does not encode absolute height across scenes.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.windows import Window
from tqdm import tqdm

from demgen.data.synth.climate import Climate, draw_climate
from demgen.data.synth.render import BANDS, render_tile, shadow_steps
from demgen.data.synth.terrain import (
    CLASSES,
    LC_HALO,
    PRESETS,
    classify,
    erode,
    terrain_elevation,
)
from demgen.errors import InputError
from demgen.io.geodesy import UNKNOWN_DATUM
from demgen.io.jsonio import dumps, write_json
from demgen.io.raster import geotiff_profile, open_writer

# Synthetic heights are relative to no geoid or ellipsoid: tagged so on dtm.tif and dsm.tif
# (and the stereo initial DSM), so nothing downstream mistakes them for EGM2008 heights.
SYNTH_VERTICAL_CRS = UNKNOWN_DATUM
RELIEFS: tuple[str, ...] = ("plains", "hills", "alpine")
SCENE_FILES: tuple[str, ...] = (
    "dtm.tif",
    "dsm.tif",
    "image.tif",
    "landcover.tif",
    "clouds.tif",
    "scene.json",
)


@dataclass
class SceneConfig:
    """Parameters of one synthetic scene (square, north-up, projected CRS)."""

    size: int = 512  # pixels per side (square scenes)
    seed: int = 0
    relief: str = "hills"  # "plains" | "hills" | "alpine"
    pixel_size: float = 10.0  # metres
    crs: str = "EPSG:32633"
    origin: tuple[float, float] | None = None  # upper-left (x, y); default derived from seed
    elevation_range: tuple[float, float] | None = None  # metres; default from preset
    sea_level: float | None = None  # metres; default from preset
    sun_azimuth: float = 150.0
    sun_elevation: float = 40.0
    haze: float = 0.1
    cloud_cover: float = 0.0
    erosion_iterations: int = 30
    tile: int = 512  # processing tile (memory bound)
    max_shadow_px: int = 256  # longest cast-shadow ray, pixels
    stereo: bool = False  # also write initial_dsm.tif, ortho2.tif, triangulation_error.tif ...
    # land-cover lines and aerosol factor (synth/climate.py Climate fields); default: drawn
    # from the seed relative to the elevation range, so every scene has its own
    climate: dict[str, float] | None = None


def validate_config(config: SceneConfig) -> None:
    """Raise InputError (one line) for values the generator cannot honour."""
    c = config
    if not isinstance(c.size, int | np.integer) or c.size < 32:
        raise InputError(f"size must be an integer >= 32, got {c.size!r}")
    if c.relief not in RELIEFS:
        raise InputError(f"relief must be one of {', '.join(RELIEFS)}, got {c.relief!r}")
    if not (math.isfinite(c.pixel_size) and c.pixel_size > 0):
        raise InputError(f"pixel_size must be > 0 metres, got {c.pixel_size!r}")
    if not (0 < c.sun_elevation <= 90):
        raise InputError(f"sun_elevation must be in (0, 90] degrees, got {c.sun_elevation!r}")
    if not math.isfinite(c.sun_azimuth):
        raise InputError(f"sun_azimuth must be finite, got {c.sun_azimuth!r}")
    if not (0 <= c.cloud_cover <= 1):
        raise InputError(f"cloud_cover must be in [0, 1], got {c.cloud_cover!r}")
    if not (0 <= c.haze <= 1):
        raise InputError(f"haze must be in [0, 1], got {c.haze!r}")
    if c.elevation_range is not None:
        lo, hi = c.elevation_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InputError(f"elevation_range must be (min, max) with min < max, got {lo}, {hi}")
    if c.sea_level is not None and not math.isfinite(c.sea_level):
        raise InputError(f"sea_level must be finite, got {c.sea_level!r}")
    if not isinstance(c.erosion_iterations, int | np.integer) or c.erosion_iterations < 0:
        raise InputError(f"erosion_iterations must be >= 0, got {c.erosion_iterations!r}")
    if not isinstance(c.tile, int | np.integer) or c.tile < 16:
        raise InputError(f"tile must be an integer >= 16, got {c.tile!r}")
    if not isinstance(c.max_shadow_px, int | np.integer) or c.max_shadow_px < 0:
        raise InputError(f"max_shadow_px must be >= 0, got {c.max_shadow_px!r}")
    if c.climate is not None:
        Climate.from_dict(c.climate)  # raises InputError on a bad climate
    try:
        crs = CRS.from_user_input(c.crs)
    except Exception as exc:  # rasterio raises CRSError
        raise InputError(f"crs {c.crs!r} is not a valid CRS") from exc
    if not crs.is_projected:
        raise InputError(f"crs must be projected (metres), got {c.crs!r}")


def resolve_config(config: SceneConfig) -> SceneConfig:
    """Fill defaults (elevation range, sea level, origin, climate) so the scene is fully
    specified: the climate is drawn from the seed and the elevation range unless given."""
    validate_config(config)
    preset = PRESETS[config.relief]
    er = config.elevation_range or preset.elevation_range
    sea = preset.sea_level if config.sea_level is None else config.sea_level
    origin = config.origin
    if origin is None:
        rng = random.Random(config.seed * 7919 + 17)
        extent = config.size * config.pixel_size
        x = rng.uniform(200_000.0, max(200_000.0, 800_000.0 - extent))
        y = rng.uniform(1_000_000.0 + extent, 8_000_000.0)
        px = config.pixel_size
        origin = (round(x / px) * px, round(y / px) * px)
    er = (float(er[0]), float(er[1]))
    climate = (
        draw_climate(config.seed, er)
        if config.climate is None
        else Climate.from_dict(config.climate)
    )
    return replace(
        config,
        climate=climate.to_dict(),
        elevation_range=er,
        sea_level=float(sea),
        origin=(float(origin[0]), float(origin[1])),
    )


def scene_transform(cfg: SceneConfig) -> Affine:
    """North-up affine transform of a resolved config (upper-left origin, square pixels)."""
    assert cfg.origin is not None
    return Affine(cfg.pixel_size, 0.0, cfg.origin[0], 0.0, -cfg.pixel_size, cfg.origin[1])


def _tiles(size: int, tile: int) -> list[tuple[int, int, int, int]]:
    out = []
    for r0 in range(0, size, tile):
        for c0 in range(0, size, tile):
            out.append((r0, c0, min(tile, size - r0), min(tile, size - c0)))
    return out


def _coords(cfg: SceneConfig, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, ...]:
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


def _read_padded(ds: Any, r0: int, c0: int, h: int, w: int, pads: tuple[int, int, int, int],
                 size: int, fill: float) -> np.ndarray:  # fmt: skip
    """Read [r0-top, r0+h+bottom) x [c0-left, c0+w+right), `fill` outside the scene."""
    top, bottom, left, right = pads
    out = np.full((h + top + bottom, w + left + right), fill, dtype=np.float32)
    ra, rb = max(0, r0 - top), min(size, r0 + h + bottom)
    ca, cb = max(0, c0 - left), min(size, c0 + w + right)
    data = ds.read(1, window=Window(ca, ra, cb - ca, rb - ra)).astype(np.float32)
    out[ra - (r0 - top) : rb - (r0 - top), ca - (c0 - left) : cb - (c0 - left)] = data
    return out


def _normals_block(dsm_pad: np.ndarray, top: int, left: int, r0: int, c0: int, h: int, w: int,
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


def _write_scene(tmp: Path, cfg: SceneConfig, progress: bool) -> dict[str, Any]:
    assert cfg.origin is not None and cfg.elevation_range is not None
    assert cfg.sea_level is not None and cfg.climate is not None
    preset = PRESETS[cfg.relief]
    climate = Climate.from_dict(cfg.climate)
    size, px = cfg.size, cfg.pixel_size
    transform = scene_transform(cfg)
    crs = CRS.from_user_input(cfg.crs)
    tiles = _tiles(size, cfg.tile)
    n_it = int(cfg.erosion_iterations)
    halo = 2 * n_it + LC_HALO
    span = cfg.elevation_range[1] - cfg.elevation_range[0]
    classes_json = dumps({str(k): v for k, v in CLASSES.items()}, indent=None)

    def prof(count: int, dtype: str) -> dict[str, Any]:
        return geotiff_profile(
            width=size, height=size, count=count, dtype=dtype, crs=crs, transform=transform
        )

    bar = tqdm(total=2 * len(tiles), desc=f"synth seed {cfg.seed}", unit="tile",
               disable=not progress, leave=False)  # fmt: skip
    counts = np.zeros(9, dtype=np.int64)
    dtm_min, dtm_max = math.inf, -math.inf
    dsm_max = -math.inf
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        with (
            open_writer(tmp / "dtm.tif", prof(1, "float32"), descriptions=["dtm"],
                        units=["metre"], vertical_crs=SYNTH_VERTICAL_CRS) as w_dtm,
            open_writer(tmp / "dsm.tif", prof(1, "float32"), descriptions=["dsm"],
                        units=["metre"], vertical_crs=SYNTH_VERTICAL_CRS) as w_dsm,
            open_writer(tmp / "landcover.tif", prof(1, "uint8"), descriptions=["landcover"],
                        tags={"classes": classes_json}) as w_lc,
        ):  # fmt: skip
            for r0, c0, th, tw in tiles:
                xm, ym, _, _ = _coords(cfg, r0 - halo, c0 - halo, th + 2 * halo, tw + 2 * halo)
                h = terrain_elevation(xm, ym, cfg.seed, preset, cfg.elevation_range, px)
                h = erode(h, n_it, px, preset.talus_deg, span)
                e = 2 * n_it
                xe = xm[:, e : xm.shape[1] - e]
                ye = ym[e : ym.shape[0] - e, :]
                lc, dtm, dsm = classify(h, xe, ye, cfg.seed, preset, cfg.sea_level, px, climate)
                win = Window(c0, r0, tw, th)
                w_dtm.write(dtm, 1, window=win)
                w_dsm.write(dsm, 1, window=win)
                w_lc.write(lc, 1, window=win)
                counts += np.bincount(lc.ravel(), minlength=9)
                dtm_min = min(dtm_min, float(dtm.min()))
                dtm_max = max(dtm_max, float(dtm.max()))
                dsm_max = max(dsm_max, float(dsm.max()))
                bar.update()

        # pass 2: render, reading the DSM back with a sun-side halo for cast shadows
        with (
            rasterio.open(tmp / "dsm.tif") as r_dsm,
            rasterio.open(tmp / "dtm.tif") as r_dtm,
            rasterio.open(tmp / "landcover.tif") as r_lc,
            open_writer(tmp / "image.tif", prof(4, "uint16"), descriptions=list(BANDS),
                        units=["reflectance x 10000"] * 4,
                        tags={"bands": dumps(list(BANDS), indent=None), "scale": "10000"}) as w_img,
            open_writer(tmp / "clouds.tif", prof(1, "uint8"), descriptions=["clouds"]) as w_cl,
        ):  # fmt: skip
            for r0, c0, th, tw in tiles:
                win = Window(c0, r0, tw, th)
                dtm = r_dtm.read(1, window=win)
                lc = r_lc.read(1, window=win)
                # dsm of the tile alone, to bound the shadow march by the local lowest receiver
                tile_min = float(r_dsm.read(1, window=win).min())
                steps = shadow_steps(cfg.sun_azimuth, cfg.sun_elevation, px, cfg.max_shadow_px,
                                     dsm_max - tile_min)  # fmt: skip
                top = max([1] + [-dr for dr, _, _ in steps])
                bottom = max([1] + [dr for dr, _, _ in steps])
                left = max([1] + [-dc for _, dc, _ in steps])
                right = max([1] + [dc for _, dc, _ in steps])
                pads = (top, bottom, left, right)
                dsm_pad = _read_padded(r_dsm, r0, c0, th, tw, pads, size, -np.inf)
                nblk = _normals_block(dsm_pad, top, left, r0, c0, th, tw, size)
                xm, ym, gcol, grow = _coords(cfg, r0, c0, th, tw)
                img, cl = render_tile(
                    dsm_pad, top, left, dtm, lc, xm, ym, gcol, grow,
                    seed=cfg.seed, pixel_size=px, sun_azimuth=cfg.sun_azimuth,
                    sun_elevation=cfg.sun_elevation, haze=cfg.haze * climate.haze_factor,
                    cloud_cover=cfg.cloud_cover, steps=steps, normals_dsm=nblk,
                )  # fmt: skip
                w_img.write(img, window=win)
                w_cl.write(cl, 1, window=win)
                bar.update()

    if cfg.stereo:
        from demgen.data.synth.stereo import write_stereo

        write_stereo(tmp, cfg, dsm_max=dsm_max)
    total = max(1, int(counts.sum()))
    return {
        "dtm_min": dtm_min,
        "dtm_max": dtm_max,
        "dsm_max": dsm_max,
        "class_fractions": {CLASSES[k]: round(counts[k] / total, 6) for k in CLASSES},
    }


def stereo_files() -> list[str]:
    """Files a ``stereo=True`` scene adds (see :mod:`demgen.data.synth.stereo`)."""
    from demgen.data.synth.stereo import STEREO_FILES, StereoConfig

    return list(STEREO_FILES) + (["ndvi.tif"] if StereoConfig().ndvi else [])


def generate_scene(out_dir: str | Path, config: SceneConfig, *, progress: bool = False) -> Path:
    """Write one scene folder (dtm.tif, dsm.tif, image.tif, landcover.tif, clouds.tif, scene.json).

    With ``config.stereo`` it also holds the refinement inputs of
    :func:`demgen.data.synth.stereo.write_stereo` (initial_dsm.tif, ortho2.tif,
    triangulation_error.tif, ndvi.tif).

    The folder is built beside `out_dir` and renamed into place at the end, replacing any
    previous scene there, so an interrupted run never leaves a half-written scene.
    """
    cfg = resolve_config(config)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        stats = _write_scene(tmp, cfg, progress)
        assert cfg.origin is not None
        transform = scene_transform(cfg)
        meta = {
            "format": "demgen-synth-scene/1",
            "seed": cfg.seed,
            "config": asdict(cfg),
            "crs": CRS.from_user_input(cfg.crs).to_string(),
            "transform": list(transform)[:6],
            "width": cfg.size,
            "height": cfg.size,
            "pixel_size": cfg.pixel_size,
            "classes": {str(k): v for k, v in CLASSES.items()},
            "bands": list(BANDS),
            "band_wavelengths_nm": {"B2": 490, "B3": 560, "B4": 665, "B8": 842},
            "reflectance_scale": 10000,
            "files": list(SCENE_FILES) + (stereo_files() if cfg.stereo else []),
            # this scene's land-cover lines (metres) and aerosol factor (synth/climate.py)
            "climate": cfg.climate,
            "stats": stats,
            # synthetic heights are relative to no geoid or ellipsoid; the rasters say so too
            "vertical_crs": SYNTH_VERTICAL_CRS,
        }
        write_json(tmp / "scene.json", meta)
        if out.exists():
            trash = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def generate_world(
    out_dir: str | Path, n_scenes: int, config: SceneConfig, *, progress: bool = False
) -> list[Path]:
    """Write scenes OUT/scene_000 ... with seeds config.seed + i and distinct origins."""
    if not isinstance(n_scenes, int | np.integer) or n_scenes < 1:
        raise InputError(f"n_scenes must be an integer >= 1, got {n_scenes!r}")
    validate_config(config)
    out = Path(out_dir)
    paths = []
    step = config.size * config.pixel_size + 10_000.0
    for i in range(n_scenes):
        origin = config.origin
        if origin is not None:
            origin = (origin[0] + i * step, origin[1])
        cfg = replace(config, seed=config.seed + i, origin=origin)
        paths.append(generate_scene(out / f"scene_{i:03d}", cfg, progress=progress))
    return paths
