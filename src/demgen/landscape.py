"""Fully artificial landscapes: procedural terrain -> DEM -> a DEM -> image model -> 3D view.

:func:`make_landscape` draws a terrain from a seed, writes it as a georeferenced DEM on the
grid the checkpoint was trained at, lets a DEM -> image checkpoint (``dem2image``,
``dem2image_pix2pix``: one ``dem`` input in metres, one ``reflectance`` output) paint its
image through :func:`demgen.inference.scene.predict_scene`, and drapes that image on the
terrain in the offline 3D viewer (:func:`demgen.viz.viewer.render_view`). The folder holds

- ``dem.tif``: float32 heights in metres (``vertical_crs`` "unknown": synthetic heights
  have no datum), tagged with the terrain, relief and seed;
- ``image.tif``: the model's image as the checkpoint stores images (uint16 reflectance x
  10000 for the synthetic and Sentinel-2 stores, bands B2 B3 B4 B8), same grid;
- ``view.html``: the 3D view, one self-contained page (true colour from B4 B3 B2, else the
  first three bands, 2-98 % stretch).

Two terrains: ``synth`` is the synthetic world's eroded terrain (:mod:`demgen.data.synth`:
fBm and ridged noise, domain warp, hydraulic and thermal erosion, water at sea level), the
DTM :func:`~demgen.data.synth.generate_scene` writes for the same seed, relief and pixel
size; ``perlin`` is the plain fBm of ImageToDEM's artificial landscapes
(:mod:`demgen.data.synth.perlin_terrain`) over the same relief preset's height range. The
grid is the synthetic world's: EPSG:32633, an origin drawn from the seed, the checkpoint's
pixel size (10 m when it records none).

Everything is a function of the arguments and the checkpoint: the same seed gives
byte-identical files (no timestamps are written) on the same machine and precision. The
folder is built beside ``out`` and renamed into place when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from demgen.data.synth.config import (
    RELIEFS,
    SYNTH_VERTICAL_CRS,
    SceneConfig,
    resolve_config,
    scene_transform,
)
from demgen.data.synth.perlin_terrain import perlin_relief, perlin_terrain
from demgen.data.synth.tiling import scene_tiles
from demgen.data.synth.world import ground_tile
from demgen.errors import InputError
from demgen.io.raster import NODATA, atomic_dir, write_raster

__all__ = [
    "DEFAULT_PIXEL_SIZE",
    "FILES",
    "MIN_SIZE",
    "TERRAINS",
    "check_landscape_task",
    "landscape_config",
    "landscape_heights",
    "make_landscape",
    "synth_dtm",
]

TERRAINS: tuple[str, ...] = ("synth", "perlin")
#: Smallest side (px): a few prediction windows of the small checkpoints.
MIN_SIZE = 64
#: Pixel size (metres) of a checkpoint that records none.
DEFAULT_PIXEL_SIZE = 10.0
#: What the output folder holds: key of :func:`make_landscape`'s result -> file name.
FILES: dict[str, str] = {"dem": "dem.tif", "image": "image.tif", "view": "view.html"}


def _check_arguments(seed: Any, relief: str, size: Any, terrain: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a whole number >= 0, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < MIN_SIZE:
        raise InputError(f"size must be a whole number >= {MIN_SIZE} pixels, got {size!r}")
    if relief not in RELIEFS:
        raise InputError(f"relief must be one of {', '.join(RELIEFS)}, got {relief!r}")
    if terrain not in TERRAINS:
        raise InputError(f"terrain must be one of {', '.join(TERRAINS)}, got {terrain!r}")


def check_landscape_task(task: Any, checkpoint: str | Path) -> None:
    """InputError (one line) unless ``task`` reads one ``dem`` layer in metres and writes
    one image (unit ``reflectance``): a DEM -> image checkpoint."""
    spec = task.spec
    dem = [la for la in spec.inputs if la.name == "dem" and la.unit == "metre"]
    images = [la for la in spec.outputs if la.unit == "reflectance"]
    if not dem or not images:
        ins = ", ".join(f"{la.name} ({la.unit})" for la in spec.inputs)
        outs = ", ".join(f"{la.name} ({la.unit})" for la in spec.outputs)
        raise InputError(
            f"{checkpoint}: not a DEM -> image checkpoint (it reads {ins} and writes {outs}; "
            "landscape needs a dem (metre) input and an image (reflectance) output, e.g. a "
            "dem2image model)"
        )
    if len(spec.inputs) > 1 or len(spec.outputs) > 1:
        raise InputError(
            f"{checkpoint}: the model reads {spec.input_names} and writes {spec.output_names}; "
            "landscape gives it a dem alone and writes one image"
        )


def landscape_config(seed: int, relief: str, size: int, pixel_size: float) -> SceneConfig:
    """The resolved synthetic-scene config of a landscape: its grid (EPSG:32633, the
    seed's origin, ``pixel_size``) and, for ``synth`` terrain, the terrain itself."""
    return resolve_config(SceneConfig(size=size, seed=seed, relief=relief, pixel_size=pixel_size))


def synth_dtm(cfg: SceneConfig) -> np.ndarray:
    """The DTM (float32 metres, water at sea level) of a resolved scene config, tile by tile
    exactly as :func:`demgen.data.synth.generate_scene` computes its ``dtm.tif``
    (:func:`demgen.data.synth.world.ground_tile`)."""
    out = np.empty((cfg.size, cfg.size), dtype=np.float32)
    for r0, c0, th, tw in scene_tiles(cfg.size, cfg.tile):
        out[r0 : r0 + th, c0 : c0 + tw] = ground_tile(cfg, r0, c0, th, tw)[1]
    return out


def landscape_heights(cfg: SceneConfig, terrain: str) -> np.ndarray:
    """The terrain's heights (float32 metres) on the grid of ``cfg`` (resolved)."""
    if terrain == "synth":
        return synth_dtm(cfg)
    if terrain == "perlin":
        return perlin_terrain(cfg.size, cfg.seed, pixel_size=cfg.pixel_size,
                              **perlin_relief(cfg.relief))  # fmt: skip
    raise InputError(f"terrain must be one of {', '.join(TERRAINS)}, got {terrain!r}")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} already exists and is not empty (pass --overwrite to replace it)")


def make_landscape(
    out: str | Path,
    checkpoint: str | Path,
    *,
    seed: int = 0,
    relief: str = "hills",
    size: int = 512,
    terrain: str = "synth",
    overwrite: bool = False,
    progress: bool = True,
    precision: str = "auto",
    device: str | None = None,
) -> dict[str, Path]:
    """Write the landscape folder ``out`` (module docstring) and return its files:
    ``{"dem": out/dem.tif, "image": out/image.tif, "view": out/view.html}``.

    Args:
        out: the folder; an existing non-empty one is refused unless ``overwrite``.
        checkpoint: a DEM -> image checkpoint (others are refused with one line).
        seed: any whole number >= 0: the terrain and the grid's origin.
        relief: ``plains``, ``hills`` or ``alpine`` (the synthetic presets' height ranges).
        size: pixels per side (>= 64; prediction pads windows to the model's multiple).
        terrain: ``synth`` (eroded, the synthetic world's) or ``perlin`` (plain fBm).
        progress: a progress bar over the prediction windows.
        precision, device: of the prediction (``predict_scene``'s).
    """
    from demgen.inference.scene import predict_scene
    from demgen.tasks.registry import load_task
    from demgen.viz.viewer import render_view

    _check_arguments(seed, relief, size, terrain)
    out = Path(out)
    _check_out(out, overwrite)
    task = load_task(checkpoint)
    check_landscape_task(task, checkpoint)
    pixel_size = float(task.hparams.get("pixel_size") or DEFAULT_PIXEL_SIZE)
    cfg = landscape_config(int(seed), relief, int(size), pixel_size)
    heights = landscape_heights(cfg, terrain)
    tags = {"demgen_output": "dem", "units": "metre", "landscape_terrain": terrain,
            "landscape_relief": relief, "landscape_seed": str(int(seed))}  # fmt: skip
    with atomic_dir(out) as tmp:
        dem = write_raster(
            tmp / FILES["dem"], heights, crs=cfg.crs, transform=scene_transform(cfg),
            nodata=NODATA, descriptions=["dem"], units=["metre"], tags=tags,
            vertical_crs=SYNTH_VERTICAL_CRS,
        )  # fmt: skip
        predict_scene(task, {"dem": dem}, tmp / FILES["image"], precision=precision,
                      device=device, progress=progress)  # fmt: skip
        render_view(dem, tmp / FILES["view"], images=[tmp / FILES["image"]],
                    title=f"demgen landscape: {terrain} {relief}, seed {int(seed)}")  # fmt: skip
    return {key: out / name for key, name in FILES.items()}
