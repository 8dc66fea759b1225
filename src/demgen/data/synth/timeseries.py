"""Synthetic time series: one terrain, K dates of growth, seasons and weather.

A scene's terrain, base land cover and base DSM come from :func:`generate_scene` (the
single-date generator, tiled). Over them, each date gets

* urban growth (:mod:`demgen.data.synth.growth`): roads, blocks cleared and built along the
  previous date's built-up area and the roads, houses with their roofs, heights (so cast
  shadows) and cleared ground; buildings only accumulate;
* seasons (:mod:`demgen.data.synth.seasons`): grass, forest and crop reflectance following
  phenology and crop calendars, a seasonal snow line, the sun elevation of the day;
* weather: its own cloud field (cover drawn per date, the first date clear by default) and haze.

Layout (see :mod:`demgen.data.timelayout`)::

    scene_000/dtm.tif, times.json
    scene_000/t00/image.tif (uint16 reflectance x 10000, B2 B3 B4 B8), buildings.tif (uint8 0/1),
                  clouds.tif (uint8 0/1), dsm.tif (float32, the DSM of that date),
                  landcover.tif (that date's classes: roads and built blocks urban, snow)

Dates are processed tile by tile (halos as in world.py), so memory is bounded by the tile; the
block-level growth state has ~80x fewer cells than the scene (9 x 9 px blocks at 10 m).
The same seed gives the same files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window
from tqdm import tqdm

from demgen.data.synth.climate import Climate
from demgen.data.synth.config import (
    SYNTH_VERTICAL_CRS,
    SceneConfig,
    resolve_config,
    scene_transform,
)
from demgen.data.synth.growth import BlockGrid, urban_fields
from demgen.data.synth.render import BANDS, ROOF_VARIANTS, SPECTRA, render_tile, shadow_steps
from demgen.data.synth.seasons import (
    BARE_SOIL,
    DRY_GRASS,
    SNOW_DROP_M,
    date_weather,
    greenness,
    seasonal_surface,
    snow_line,
    sun_elevation,
)
from demgen.data.synth.terrain import (
    CLASSES,
    CROP,
    GRASS,
    ROCK,
    SAND,
    SNOW,
    URBAN,
    fbm,
    mix_key,
)
from demgen.data.synth.tiling import normals_block, read_padded, scene_tiles, tile_coords
from demgen.data.synth.world import generate_scene
from demgen.data.timelayout import (
    TIMES_FILE,
    add_months,
    frame_dir_name,
    parse_date,
    times_document,
)
from demgen.errors import InputError
from demgen.io.jsonio import dumps, write_json
from demgen.io.raster import atomic_dir, geotiff_profile, open_writer

SNOW_CLASSES = (GRASS, CROP, ROCK, SAND)  # open land a seasonal snow cover hides
TS_FRAME_FILES: tuple[str, ...] = (
    "image.tif",
    "buildings.tif",
    "clouds.tif",
    "dsm.tif",
    "landcover.tif",
)
TS_SCENE_FILES: tuple[str, ...] = ("dtm.tif", TIMES_FILE)


@dataclass
class TimeSeriesConfig:
    """Parameters of the time axis (the terrain comes from a :class:`SceneConfig`)."""

    times: int = 4  # number of dates
    months_between: int = 1  # calendar months between dates (SpaceNet 7 mosaics are monthly)
    start: str = "2020-01-15"  # ISO date of the first image
    cloud_cover: float = 0.2  # mean per-date cloud cover (exponentially distributed, <= 0.9)
    clear_first: bool = True  # the first date is cloud-free (the day-0 input of later tasks)
    # monthly hazard of a block with all 4 neighbours built / next to a road; design values
    # that grow a 128 px town visibly over the 24 months of a SpaceNet 7 series
    urban_rate: float = 0.05
    road_rate: float = 0.01
    snow_drop: float = SNOW_DROP_M  # metres the snow line descends in midwinter


def validate_time_config(ts: TimeSeriesConfig) -> None:
    """Raise InputError (one line) for a time axis the generator cannot honour."""
    if not isinstance(ts.times, int | np.integer) or ts.times < 1:
        raise InputError(f"times must be an integer >= 1, got {ts.times!r}")
    if not isinstance(ts.months_between, int | np.integer) or ts.months_between < 1:
        raise InputError(f"months_between must be an integer >= 1, got {ts.months_between!r}")
    parse_date(ts.start)
    for name in ("cloud_cover", "urban_rate", "road_rate"):
        v = getattr(ts, name)
        if not (0 <= v <= 1):
            raise InputError(f"{name} must be in [0, 1], got {v!r}")
    if not (0 <= ts.snow_drop < 1e5):
        raise InputError(f"snow_drop must be >= 0 metres, got {ts.snow_drop!r}")


def series_dates(ts: TimeSeriesConfig) -> list[Any]:
    """The dates of the series: start plus i x months_between calendar months."""
    start = parse_date(ts.start)
    return [add_months(start, i * ts.months_between) for i in range(ts.times)]


def _slope(r_dtm: Any, r0: int, c0: int, h: int, w: int, size: int, px: float) -> np.ndarray:
    """tan(slope) of a DTM tile from central differences, edge-replicated at scene borders."""
    pad = read_padded(r_dtm, r0, c0, h, w, (1, 1, 1, 1), size, 0.0)
    z = normals_block(pad, 1, 1, r0, c0, h, w, size)
    gx = (z[1:-1, 2:] - z[1:-1, :-2]) / (2 * px)
    gy = (z[:-2, 1:-1] - z[2:, 1:-1]) / (2 * px)
    return np.sqrt(gx * gx + gy * gy)


def _scan_blocks(base: Path, cfg: SceneConfig, tiles: list) -> BlockGrid:
    """Block grid of the scene with the base land cover, buildability and road counts."""
    assert cfg.sea_level is not None
    xa, ya, _, _ = tile_coords(cfg, 0, 0, cfg.size, cfg.size)
    grid = BlockGrid.empty(xa, ya)
    with rasterio.open(base / "landcover.tif") as r_lc, rasterio.open(base / "dtm.tif") as r_dtm:
        for r0, c0, th, tw in tiles:
            win = Window(c0, r0, tw, th)
            lc, dtm = r_lc.read(1, window=win), r_dtm.read(1, window=win)
            slope = _slope(r_dtm, r0, c0, th, tw, cfg.size, cfg.pixel_size)
            xm, ym, _, _ = tile_coords(cfg, r0, c0, th, tw)
            grid.add_tile(xm, ym, lc, dtm, slope, cfg.sea_level, cfg.seed)
    return grid


def _write_series(tmp: Path, cfg: SceneConfig, ts: TimeSeriesConfig, progress: bool) -> dict:
    base = generate_scene(tmp / "base", replace(cfg, cloud_cover=0.0, stereo=False))
    size, px, seed = cfg.size, cfg.pixel_size, cfg.seed
    snow_line_m = Climate.from_dict(cfg.climate).snow_line_m  # this scene's drawn climate
    crs = CRS.from_user_input(cfg.crs)
    transform = scene_transform(cfg)
    tiles = scene_tiles(size, cfg.tile)
    grid = _scan_blocks(base, cfg, tiles)
    t_dev = grid.simulate(seed, ts.times, ts.months_between, ts.urban_rate, ts.road_rate)
    dates = series_dates(ts)
    classes_json = dumps({str(k): v for k, v in CLASSES.items()}, indent=None)
    grass_peak = np.asarray(SPECTRA[GRASS], np.float32)

    def prof(count: int, dtype: str) -> dict[str, Any]:
        return geotiff_profile(
            width=size, height=size, count=count, dtype=dtype, crs=crs, transform=transform
        )

    frames: list[dict[str, Any]] = []
    prev_buildings = 0
    bar = tqdm(total=2 * len(tiles) * ts.times, desc=f"series seed {seed}", unit="tile",
               disable=not progress, leave=False)  # fmt: skip
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        r_lc = stack.enter_context(rasterio.open(base / "landcover.tif"))
        r_dtm = stack.enter_context(rasterio.open(base / "dtm.tif"))
        r_dsm = stack.enter_context(rasterio.open(base / "dsm.tif"))
        for t, date in enumerate(dates):
            doy = float(date.timetuple().tm_yday)
            cover, haze = date_weather(seed, t, ts.cloud_cover, cfg.haze, ts.clear_first and t == 0)
            el = sun_elevation(cfg.sun_elevation, doy)
            line = snow_line(snow_line_m, doy, ts.snow_drop)
            g = np.float32(greenness(doy))
            fdir = tmp / frame_dir_name(t, ts.times)
            fdir.mkdir()
            n_bld, dsm_max = 0, -np.inf
            # pass A: this date's land cover, DSM and building mask (pixel-local)
            with (
                open_writer(fdir / "dsm.tif", prof(1, "float32"), descriptions=["dsm"],
                            units=["metre"], vertical_crs=SYNTH_VERTICAL_CRS) as w_dsm,
                open_writer(fdir / "landcover.tif", prof(1, "uint8"), descriptions=["landcover"],
                            tags={"classes": classes_json}) as w_lc,
                open_writer(fdir / "buildings.tif", prof(1, "uint8"),
                            descriptions=["buildings"]) as w_b,
            ):  # fmt: skip
                for r0, c0, th, tw in tiles:
                    win = Window(c0, r0, tw, th)
                    lc0 = r_lc.read(1, window=win)
                    dtm, dsm0 = r_dtm.read(1, window=win), r_dsm.read(1, window=win)
                    xm, ym, _, _ = tile_coords(cfg, r0, c0, th, tw)
                    u = urban_fields(grid, xm, ym, lc0, seed, t, ts.months_between)
                    built_up = u["road"] | u["developed"]
                    lc = lc0.copy()
                    lc[built_up] = URBAN
                    # seasonal snow line with the same along-slope noise as the permanent one
                    n_line = fbm(xm, ym, 1800.0, 3, mix_key(seed, "lines"))
                    snow = np.isin(lc, SNOW_CLASSES) & (dtm > np.float32(line) + n_line * 300)
                    lc[snow] = SNOW
                    dsm = np.where(built_up, dtm, dsm0)
                    dsm = np.where(u["building"], dtm + u["height"], dsm).astype(np.float32)
                    bld = ((lc0 == URBAN) & (dsm0 - dtm > 1.0)) | u["building"]
                    w_dsm.write(dsm, 1, window=win)
                    w_lc.write(lc, 1, window=win)
                    w_b.write(bld.astype(np.uint8), 1, window=win)
                    n_bld += int(bld.sum())
                    dsm_max = max(dsm_max, float(dsm.max()))
                    bar.update()
            # pass B: render, reading this date's DSM back with the sun-side shadow halo
            n_cloud = 0
            with (
                rasterio.open(fdir / "dsm.tif") as r_dsm_t,
                rasterio.open(fdir / "landcover.tif") as r_lc_t,
                open_writer(fdir / "image.tif", prof(4, "uint16"), descriptions=list(BANDS),
                            units=["reflectance x 10000"] * 4,
                            tags={"bands": dumps(list(BANDS), indent=None), "scale": "10000",
                                  "date": date.isoformat()}) as w_img,
                open_writer(fdir / "clouds.tif", prof(1, "uint8"), descriptions=["clouds"]) as w_cl,
            ):  # fmt: skip
                for r0, c0, th, tw in tiles:
                    win = Window(c0, r0, tw, th)
                    lc0, lc = r_lc.read(1, window=win), r_lc_t.read(1, window=win)
                    dtm = r_dtm.read(1, window=win)
                    xm, ym, gcol, grow = tile_coords(cfg, r0, c0, th, tw)
                    u = urban_fields(grid, xm, ym, lc0, seed, t, ts.months_between)

                    def surface(
                        refl: np.ndarray, lc=lc, xm=xm, ym=ym, u=u, doy=doy, g=g
                    ) -> np.ndarray:
                        refl = seasonal_surface(refl, lc, xm, ym, seed, doy)
                        lawn = DRY_GRASS + (grass_peak - DRY_GRASS) * g
                        refl[u["yard"]] = 0.5 * BARE_SOIL + 0.5 * lawn
                        refl[u["cleared"]] = BARE_SOIL
                        refl[u["building"]] = ROOF_VARIANTS[u["roof"][u["building"]]]
                        return refl

                    tile_min = float(r_dsm_t.read(1, window=win).min())
                    steps = shadow_steps(cfg.sun_azimuth, el, px, cfg.max_shadow_px,
                                         dsm_max - tile_min)  # fmt: skip
                    pads = (
                        max([1] + [-dr for dr, _, _ in steps]),
                        max([1] + [dr for dr, _, _ in steps]),
                        max([1] + [-dc for _, dc, _ in steps]),
                        max([1] + [dc for _, dc, _ in steps]),
                    )
                    dsm_pad = read_padded(r_dsm_t, r0, c0, th, tw, pads, size, -np.inf)
                    nblk = normals_block(dsm_pad, pads[0], pads[2], r0, c0, th, tw, size)
                    img, cl = render_tile(
                        dsm_pad, pads[0], pads[2], dtm, lc, xm, ym, gcol, grow,
                        seed=seed, pixel_size=px, sun_azimuth=cfg.sun_azimuth,
                        sun_elevation=el, haze=haze, cloud_cover=cover, steps=steps,
                        normals_dsm=nblk, surface=surface, cloud_seed=mix_key(seed, "clouds", t),
                    )  # fmt: skip
                    w_img.write(img, window=win)
                    w_cl.write(cl, 1, window=win)
                    n_cloud += int(cl.sum())
                    bar.update()
            frames.append({
                "cloud_fraction": round(n_cloud / (size * size), 6),
                "cloud_cover_target": round(cover, 6),
                "haze": round(haze, 6),
                "sun_azimuth": cfg.sun_azimuth,
                "sun_elevation": round(el, 4),
                "snow_line_m": round(line, 2),
                "greenness": round(float(g), 4),
                "building_pixels": n_bld,
                "new_building_pixels": n_bld - prev_buildings if t else 0,
                "developing_blocks": int(((t_dev >= 0) & (t_dev <= t)).sum()),
            })  # fmt: skip
            prev_buildings = n_bld
    os.replace(base / "dtm.tif", tmp / "dtm.tif")
    shutil.rmtree(base)
    return times_document(
        source="synthetic",
        dates=dates,
        frames=frames,
        bands=BANDS,
        reflectance_scale=10000,
        crs=crs.to_string(),
        transform=list(transform),
        width=size,
        height=size,
        extra={
            "seed": seed,
            "parameters": asdict(ts),
            "scene_config": asdict(cfg),
            "frame_files": list(TS_FRAME_FILES),
            "scene_files": list(TS_SCENE_FILES),
            "dsm": "per date: tNN/dsm.tif is that date's DSM; dtm.tif is shared by all dates",
            "classes": {str(k): v for k, v in CLASSES.items()},
            "vertical_crs": SYNTH_VERTICAL_CRS,
        },
    )


def generate_time_series(
    out_dir: str | Path, config: SceneConfig, ts: TimeSeriesConfig, *, progress: bool = False
) -> Path:
    """Write one time-series scene folder (dtm.tif, times.json, tNN/...), atomically.

    ``config.cloud_cover`` is ignored (the base terrain is rendered clear); clouds per date
    come from ``ts.cloud_cover``. Built beside `out_dir` and renamed into place at the end.
    """
    validate_time_config(ts)
    if config.stereo:
        raise InputError("stereo outputs are not available for time series (drop --stereo)")
    cfg = resolve_config(config)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        write_json(tmp / TIMES_FILE, _write_series(tmp, cfg, ts, progress))
    return out


def generate_time_series_world(
    out_dir: str | Path,
    n_scenes: int,
    config: SceneConfig,
    ts: TimeSeriesConfig,
    *,
    progress: bool = False,
) -> list[Path]:
    """Write OUT/scene_000 ... time series with seeds config.seed + i (like generate_world)."""
    if not isinstance(n_scenes, int | np.integer) or n_scenes < 1:
        raise InputError(f"n_scenes must be an integer >= 1, got {n_scenes!r}")
    validate_time_config(ts)
    out = Path(out_dir)
    step = config.size * config.pixel_size + 10_000.0
    paths = []
    for i in range(n_scenes):
        origin = config.origin
        if origin is not None:
            origin = (origin[0] + i * step, origin[1])
        cfg = replace(config, seed=config.seed + i, origin=origin)
        paths.append(generate_time_series(out / f"scene_{i:03d}", cfg, ts, progress=progress))
    return paths
