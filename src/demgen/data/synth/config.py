"""Synthetic scene configuration: the parameters of one scene, their checks and defaults.

:class:`SceneConfig` is what a user sets; :func:`resolve_config` fills what is left to the
seed (origin, elevation range, sea level, climate), so a resolved config fully specifies a
scene. :mod:`demgen.data.synth.world` writes the scene, :mod:`demgen.data.synth.stereo` its
refinement inputs, from the same resolved config.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import Affine

from demgen.data.synth.climate import Climate, draw_climate
from demgen.data.synth.terrain import PRESETS
from demgen.errors import InputError
from demgen.io.geodesy import UNKNOWN_DATUM

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
