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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window
from tqdm import tqdm

from demgen.data.synth.climate import Climate
from demgen.data.synth.config import (
    RELIEFS,
    SCENE_FILES,
    SYNTH_VERTICAL_CRS,
    SceneConfig,
    resolve_config,
    scene_transform,
    validate_config,
)
from demgen.data.synth.render import BANDS, render_tile, shadow_steps
from demgen.data.synth.stereo import STEREO_FILES, StereoConfig, write_stereo
from demgen.data.synth.terrain import (
    CLASSES,
    LC_HALO,
    PRESETS,
    classify,
    erode,
    terrain_elevation,
)
from demgen.data.synth.tiling import normals_block, read_padded, scene_tiles, tile_coords
from demgen.errors import InputError
from demgen.io.jsonio import dumps, write_json
from demgen.io.raster import atomic_dir, geotiff_profile, open_writer

# the configuration lives in demgen.data.synth.config; these names are re-exported here
__all__ = [
    "RELIEFS",
    "SCENE_FILES",
    "SYNTH_VERTICAL_CRS",
    "SceneConfig",
    "generate_scene",
    "generate_world",
    "resolve_config",
    "scene_transform",
    "stereo_files",
    "validate_config",
]


def ground_tile(
    cfg: SceneConfig, r0: int, c0: int, th: int, tw: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Land cover, DTM and DSM of the tile at (r0, c0) of size (th, tw) of a resolved scene
    config: terrain noise over the tile and its halo, erosion, then the land-cover pass that
    levels water and raises buildings and trees. Tiles computed this way join seamlessly."""
    assert cfg.elevation_range is not None and cfg.sea_level is not None
    assert cfg.climate is not None
    preset, climate, px = PRESETS[cfg.relief], Climate.from_dict(cfg.climate), cfg.pixel_size
    n_it = int(cfg.erosion_iterations)
    halo = 2 * n_it + LC_HALO
    span = cfg.elevation_range[1] - cfg.elevation_range[0]
    xm, ym, _, _ = tile_coords(cfg, r0 - halo, c0 - halo, th + 2 * halo, tw + 2 * halo)
    h = terrain_elevation(xm, ym, cfg.seed, preset, cfg.elevation_range, px)
    h = erode(h, n_it, px, preset.talus_deg, span)
    e = 2 * n_it
    xe, ye = xm[:, e : xm.shape[1] - e], ym[e : ym.shape[0] - e, :]
    return classify(h, xe, ye, cfg.seed, preset, cfg.sea_level, px, climate)


def _write_scene(tmp: Path, cfg: SceneConfig, progress: bool) -> dict[str, Any]:
    assert cfg.origin is not None and cfg.elevation_range is not None
    assert cfg.sea_level is not None and cfg.climate is not None
    climate = Climate.from_dict(cfg.climate)
    size, px = cfg.size, cfg.pixel_size
    transform = scene_transform(cfg)
    crs = CRS.from_user_input(cfg.crs)
    tiles = scene_tiles(size, cfg.tile)
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
                lc, dtm, dsm = ground_tile(cfg, r0, c0, th, tw)
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
                dsm_pad = read_padded(r_dsm, r0, c0, th, tw, pads, size, -np.inf)
                nblk = normals_block(dsm_pad, top, left, r0, c0, th, tw, size)
                xm, ym, gcol, grow = tile_coords(cfg, r0, c0, th, tw)
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
    with atomic_dir(out) as tmp:
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
