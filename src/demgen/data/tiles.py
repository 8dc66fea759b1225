"""Import published tile datasets in their own layout (Sat2DEM) into a chip store.

Sat2DEM (Zenodo 10.5281/zenodo.14647632) ships 10,237 georeferenced 256 x 256 tiles as
one folder of satellite GeoTIFFs and one of DEM GeoTIFFs, paired by the ``_<n>.tif``
index at the end of their names, and ``data/dataset_splits.json`` with ``split_1`` ..
``split_4``, each ``{"train": [n...], "validation": [n...], "test": [n...]}``.

:func:`import_tiles` writes one chip per tile pair (the DEM warped bilinearly onto the
satellite tile's grid when their grids differ), keeping each tile's CRS and transform in
the chip's provenance, and splits them either

- by the published split (``splits_file`` and ``split``): recorded as
  ``published-random``, since those lists were drawn at random over tiles and
  neighbouring tiles (which share ground and look alike) fall on both sides, or
- by demgen's spatially blocked split (:func:`demgen.data.splits.blocked_split`): blocks
  of ``config.block`` x ``config.block`` tiles on the ground, a buffer of
  ``config.buffer`` tile widths between training and evaluation tiles.

Normalizations are fitted on the training tiles only, as ``demgen prepare`` does.
``benchmarks/leakage.py`` measures how much the random split flatters the held-out MAE.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from demgen import __version__
from demgen.data.chips import ChipStoreWriter
from demgen.data.prepare import PrepareConfig
from demgen.data.splits import ChipPlace, blocked_split
from demgen.errors import InputError
from demgen.io.geodesy import pixel_size_m_of, vertical_crs_of
from demgen.io.raster import band_names, default_band_names, grid_bounds, open_raster, require_crs

_INDEX = re.compile(r"_(\d+)\.tiff?$", re.IGNORECASE)
PUBLISHED_KEYS = {"train": "train", "val": "validation", "test": "test"}


def tile_index(folder: str | Path) -> dict[int, Path]:
    """``{n: path}`` of the ``*_<n>.tif`` files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        m = _INDEX.search(p.name)
        if m:
            n = int(m.group(1))
            if n in out:
                raise InputError(f"{folder}: two tiles with index {n} ({out[n].name}, {p.name})")
            out[n] = p
    if not out:
        raise InputError(f"{folder}: no *_<n>.tif tiles")
    return out


def load_published_split(path: str | Path, split: str) -> dict[str, list[int]]:
    """``train``/``val``/``test`` tile indices of ``split`` in Sat2DEM's dataset_splits.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable splits file ({exc})") from exc
    if split not in data:
        raise InputError(f"{path}: no split {split!r} (has {', '.join(sorted(data))})")
    entry = data[split]
    missing = [k for k in PUBLISHED_KEYS.values() if k not in entry]
    if missing:
        raise InputError(f"{path}: {split} lacks {', '.join(missing)}")
    return {ours: [int(i) for i in entry[theirs]] for ours, theirs in PUBLISHED_KEYS.items()}


def _read_pair(sat: Path, dem: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    with open_raster(sat) as s:
        require_crs(s, sat, "tile")
        img = s.read()
        valid = np.ones(img.shape[1:], bool)
        if s.nodata is not None:
            valid &= np.all(img != s.nodata, axis=0)
        grid = {"crs": s.crs, "transform": s.transform, "width": s.width, "height": s.height}
        px = pixel_size_m_of(s)
    with open_raster(dem) as d:
        height = np.full(img.shape[1:], np.nan, np.float32)
        same = d.crs == s.crs and d.transform == s.transform and d.shape == img.shape[1:]
        if same:
            height[:] = d.read(1).astype(np.float32)
            if d.nodata is not None:
                height[height == d.nodata] = np.nan
        else:
            reproject(
                rasterio.band(d, 1), height, dst_transform=grid["transform"], dst_crs=s.crs,
                dst_nodata=np.nan, resampling=Resampling.bilinear,
            )  # fmt: skip
        vertical = vertical_crs_of(d)
    valid &= np.isfinite(height)
    return img, height, valid, {**grid, "pixel_size_m": px, "vertical_crs": vertical}


def import_tiles(
    sat_dir: str | Path,
    dem_dir: str | Path,
    out: str | Path,
    config: PrepareConfig | None = None,
    splits_file: str | Path | None = None,
    split: str | None = None,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Import tile pairs into the chip store ``out`` (module docstring)."""
    cfg = config or PrepareConfig()
    cfg.check()
    if (splits_file is None) != (split is None):
        raise InputError("--splits FILE and --split NAME go together")
    sats, dems = tile_index(sat_dir), tile_index(dem_dir)
    common = sorted(set(sats) & set(dems))
    lone = sorted(set(sats) ^ set(dems))
    if not common:
        raise InputError(f"{sat_dir} and {dem_dir}: no tiles with the same _<n> index")
    if lone and log:
        log(f"{len(lone)} tile(s) without a partner skipped (e.g. index {lone[0]})")
    published = load_published_split(splits_file, split) if splits_file else None
    rng = np.random.default_rng(cfg.seed)
    writer: ChipStoreWriter | None = None
    chip_of: dict[int, int] = {}
    places, samples, scenes, dropped = [], [], [], 0
    common_crs: CRS | None = None
    try:
        for n in common:
            img, hgt, val, grid = _read_pair(sats[n], dems[n])
            h, w = hgt.shape
            if h != w:
                raise InputError(f"{sats[n]}: tiles must be square, got {w} x {h}")
            if writer is None:
                chip, bands = h, _band_names(sats[n], img.shape[0])
                writer = ChipStoreWriter(
                    out, chip_size=chip, bands=bands, image_dtype=img.dtype, overwrite=overwrite
                )
                common_crs, pixel_size = grid["crs"], grid["pixel_size_m"]
            if h != chip or img.shape[0] != len(bands):
                raise InputError(f"{sats[n]}: {img.shape} differs from the first tile's")
            if 1.0 - val.mean() > cfg.max_invalid:
                dropped += 1
                continue
            b = grid_bounds(grid["transform"], w, h)
            if grid["crs"] != common_crs:
                b = transform_bounds(grid["crs"], common_crs, *b)
            info = {
                "scene": len(scenes), "tile": n, "row": 0, "col": 0,
                "transform": list(grid["transform"])[:6], "crs": grid["crs"].to_string(),
            }  # fmt: skip
            chip_of[n] = writer.add(img, hgt, val, info)
            pix = img.reshape(img.shape[0], -1)[:, val.ravel()]
            k = min(cfg.samples_per_chip, pix.shape[1])
            samples.append(pix[:, rng.choice(pix.shape[1], k, replace=False)])
            places.append(b)
            scenes.append(
                {
                    "name": sats[n].name, "image_files": [str(sats[n])],
                    "dem_files": [str(dems[n])], "tile": n,
                    "grid": {"crs": grid["crs"].to_string(),
                             "transform": list(grid["transform"])[:6], "width": w, "height": h},
                    "vertical_crs": grid["vertical_crs"],
                }
            )  # fmt: skip
        if writer is None or not writer.chips:
            raise InputError(f"{sat_dir}: no valid tiles ({dropped} had too many invalid pixels)")
        if published is not None:
            splits = {s: [chip_of[i] for i in published[s] if i in chip_of] for s in published}
            splits["excluded"] = []
            meta = {
                "strategy": "published-random",
                "source": f"{splits_file} {split}",
                "note": "tiles drawn at random by the publishers: neighbouring tiles share "
                "ground across splits, so held-out scores are optimistic",
            }
        else:
            splits, meta = _blocked(places, chip, cfg)
        if not splits["train"]:
            raise InputError("no training tiles in the split")
        norms = _fit(
            cfg, chip, splits["train"], writer.chips, samples, bands, str(writer.image_dtype)
        )
        manifest = {
            "created_by": f"demgen {__version__}",
            "source": "tiles",
            "chip_size": chip,
            "stride": chip,
            "image_dtype": str(writer.image_dtype),
            "image_units": "stored values of the source (DN or scaled reflectance)",
            "z_unit": "m",
            "z_source_unit": "m (assumed)",
            "vertical_crs": scenes[0]["vertical_crs"],
            "pixel_size_m": list(pixel_size),
            "extra_layers": [],
            "extras": [],
            "max_invalid": cfg.max_invalid,
            "dropped_invalid": dropped,
            "unpaired_tiles": lone,
            "area_km2": None,
            "crs": common_crs.to_string() if common_crs else None,
            "tiles": {"sat_dir": str(sat_dir), "dem_dir": str(dem_dir), "count": len(scenes)},
            "scenes": scenes,
            "config": {k: v for k, v in asdict(cfg).items() if k != "extra_names"},
            "normalization": norms,
            "splits": {**meta, "seed": cfg.seed, "fractions": list(cfg.fractions), **splits},
            "folds": [],
        }
        return writer.commit(manifest)
    finally:
        if writer is not None and not writer.committed:
            writer.abort()


def _band_names(path: Path, count: int) -> list[str]:
    """The bands' descriptions when all are set and distinct, else the default names."""
    with rasterio.open(path) as ds:
        described, names = all(ds.descriptions), band_names(ds)
    if described and len(set(names)) == count:
        return names
    return default_band_names(count)


def _blocked(
    bounds: list[tuple[float, ...]], chip: int, cfg: PrepareConfig
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """demgen's blocked split over tile footprints: blocks of ``cfg.block`` tile widths."""
    arr = np.asarray(bounds, float)
    width = float(np.median(arr[:, 2] - arr[:, 0]))
    x0, y1 = arr[:, 0].min(), arr[:, 3].max()
    block = max(1, cfg.block)
    while True:
        span = block * width
        # (scene, block row from the top, block column); tile centres decide the block
        keys = [
            (0, int((y1 - (b[1] + b[3]) / 2) // span), int(((b[0] + b[2]) / 2 - x0) // span))
            for b in arr
        ]
        if block == 1 or len(set(keys)) >= cfg.min_blocks:
            break
        block -= 1
    places = [ChipPlace(0, k, tuple(b)) for k, b in zip(keys, arr.tolist(), strict=True)]
    splits = blocked_split(places, fractions=cfg.fractions, seed=cfg.seed, buffer=cfg.buffer)
    return splits, {"strategy": "spatial-blocks", "block": block, "buffer_chips": cfg.buffer}


def _fit(
    cfg: PrepareConfig,
    chip: int,
    train: list[int],
    chips: list[dict[str, Any]],
    samples: list[np.ndarray],
    bands: list[str],
    dtype: str,
) -> dict[str, Any]:
    """Normalizations fitted on the training tiles only, exactly as demgen prepare fits them
    (per-chip strategies at the tile size)."""
    from demgen.data.prepare.fit import chip_stats, fit_normalizations

    return fit_normalizations(
        replace(cfg, chip_size=chip), train, chip_stats(chips), samples, bands, dtype
    )
