"""Synthetic worlds: deterministic, georeferenced, Sentinel-2-like scenes over eroded terrain."""

from demgen.data.synth.climate import Climate, draw_climate
from demgen.data.synth.render import BANDS
from demgen.data.synth.stereo import STEREO_FILES, StereoConfig, write_stereo
from demgen.data.synth.terrain import CLASSES
from demgen.data.synth.world import (
    RELIEFS,
    SCENE_FILES,
    SceneConfig,
    generate_scene,
    generate_world,
    resolve_config,
    validate_config,
)

__all__ = [
    "BANDS",
    "CLASSES",
    "Climate",
    "RELIEFS",
    "SCENE_FILES",
    "STEREO_FILES",
    "SceneConfig",
    "StereoConfig",
    "draw_climate",
    "generate_scene",
    "generate_world",
    "resolve_config",
    "validate_config",
    "write_stereo",
]
