"""Rasters to a chip store: align each scene onto one grid, chip it strip by strip (one chip
row of the grid in memory at a time), drop chips with too many invalid pixels, split the
rest spatially, fit the normalizations on the training split and write the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from demgen import __version__
from demgen.data.align import AlignedScene, scene_grid
from demgen.data.chips import ChipStoreWriter
from demgen.data.geometa import chip_area_km2, dems_vertical_crs
from demgen.data.image_inputs import FEET_TO_METRES, detect_z_unit, image_scenes, open_checked
from demgen.data.prepare import fit
from demgen.data.prepare.config import PrepareConfig, extra_kind
from demgen.data.splits import ChipPlace, blocked_split, kfold_split
from demgen.errors import InputError
from demgen.io.geodesy import pixel_size_m
from demgen.io.jsonio import to_plain
from demgen.io.raster import GDAL_CACHE_MB, bounded_gdal_cache


def prepare_rasters(
    images: Sequence[str | Path],
    dems: Sequence[str | Path],
    out: str | Path,
    config: PrepareConfig | None = None,
    *,
    cloud_masks: Sequence[str | Path] = (),
    extras: Sequence[str | Path] = (),
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    gdal_cache_mb: int = GDAL_CACHE_MB,
) -> Path:
    """Align, chip, mask, split and normalize rasters into the chip store ``out``.

    GDAL's block cache is capped at ``gdal_cache_mb`` (its default is 5 % of RAM), which
    with one chip row in memory at a time keeps peak memory bounded for any scene size.
    """
    with bounded_gdal_cache(gdal_cache_mb):
        return _prepare_rasters(
            images,
            dems,
            out,
            config,
            cloud_masks=cloud_masks,
            extras=extras,
            overwrite=overwrite,
            log=log,
        )


def _prepare_rasters(
    images: Sequence[str | Path],
    dems: Sequence[str | Path],
    out: str | Path,
    config: PrepareConfig | None,
    *,
    cloud_masks: Sequence[str | Path],
    extras: Sequence[str | Path],
    overwrite: bool,
    log: Callable[[str], None] | None,
) -> Path:
    cfg = config or PrepareConfig()
    cfg.check()
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists (pass --overwrite to replace it)")
    if not images or not dems:
        raise InputError("prepare needs --image and --dem (or --npz)")
    for p in [*images, *dems, *cloud_masks, *extras]:
        open_checked(p)
    extra_names = [
        cfg.extra_names[i] if i < len(cfg.extra_names) and cfg.extra_names[i] else Path(e).stem
        for i, e in enumerate(extras)
    ]
    if len(set(extra_names)) != len(extra_names):
        raise InputError(f"--extra names must differ (got {', '.join(extra_names)})")
    unknown = {h.lower() for h in cfg.extra_heights} - {n.lower() for n in extra_names}
    if unknown:
        raise InputError(f"--extra-heights names no --extra layer: {', '.join(sorted(unknown))}")
    unknown = {g.lower() for g in cfg.extra_gaps} - {n.lower() for n in extra_names}
    if unknown:
        raise InputError(f"--extra-gaps names no --extra layer: {', '.join(sorted(unknown))}")
    gaps = [n.lower() in {g.lower() for g in cfg.extra_gaps} for n in extra_names]
    kinds = [extra_kind(n, cfg.extra_heights) for n in extra_names]
    height_extras = [e for e, k in zip(extras, kinds, strict=True) if k == "height"]
    z_source = cfg.z_unit
    for d in [*dems, *height_extras]:
        found = detect_z_unit(d)
        if found == "ft" and cfg.z_unit is None:
            raise InputError(
                f"{d}: heights are in feet by its metadata; pass --z-unit ft to convert"
            )
        if d in dems:
            z_source = z_source or found
    z_scale = FEET_TO_METRES if cfg.z_unit == "ft" else 1.0
    extra_scales = [z_scale if k == "height" else 1.0 for k in kinds]
    scenes = image_scenes(images, cfg.bands)
    bands = [b.name for b in scenes[0].bands]
    chip = cfg.chip_size
    stride = cfg.stride or chip
    rng = np.random.default_rng(cfg.seed)
    grids, places_px, samples, dropped = [], [], [], 0
    resamplings: list[dict[str, Any]] = []
    vertical_crs = dems_vertical_crs(dems)
    common_crs: CRS | None = None
    writer = None
    band_counts: list[int] | None = None
    try:
        for si, scene in enumerate(scenes):
            grid = scene_grid(scene, dems, grid=cfg.grid, crs=cfg.crs, resolution=cfg.resolution)
            grids.append(grid)
            common_crs = common_crs or grid.crs
            if log:
                log(
                    f"scene {scene.name}: {grid.width} x {grid.height} px on {grid.crs.to_string()}"
                )
            with AlignedScene(
                scene,
                dems,
                grid,
                z_scale=z_scale,
                cloud_masks=cloud_masks,
                extras=extras,
                extra_scales=extra_scales,
                image_method=cfg.image_resampling,
                extra_gaps=gaps,
            ) as aligned:
                resamplings.append(aligned.resampling)
                if band_counts is None:
                    band_counts = aligned.extra_band_counts
                elif aligned.extra_band_counts != band_counts:
                    raise InputError(f"{scene.name}: extra layers' band counts changed")
                if writer is None:
                    writer = ChipStoreWriter(
                        out,
                        chip_size=chip,
                        bands=bands,
                        image_dtype=aligned.image_dtype,
                        n_extra=sum(aligned.extra_band_counts),
                        overwrite=overwrite,
                    )
                for r0 in range(0, grid.height - chip + 1, stride):
                    img, hgt, val, ext = aligned.read(Window(0, r0, grid.width, chip))
                    for c0 in range(0, grid.width - chip + 1, stride):
                        sl = np.s_[:, c0 : c0 + chip]
                        m = val[sl]
                        if 1.0 - m.mean() > cfg.max_invalid:
                            dropped += 1
                            continue
                        t = grid.transform * Affine.translation(c0, r0)
                        b = (t.c, t.f + t.e * chip, t.c + t.a * chip, t.f)
                        b = (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
                        if grid.crs != common_crs:
                            b = transform_bounds(grid.crs, common_crs, *b)
                        info = {"scene": si, "row": r0, "col": c0, "transform": list(t)[:6]}
                        writer.add(
                            img[:, :, c0 : c0 + chip],
                            hgt[sl],
                            m,
                            info,
                            ext[:, :, c0 : c0 + chip] if len(extras) else None,
                        )
                        places_px.append((si, r0, c0, b))
                        pix = img[:, :, c0 : c0 + chip].reshape(len(bands), -1)[:, m.ravel()]
                        k = min(cfg.samples_per_chip, pix.shape[1])
                        samples.append(pix[:, rng.choice(pix.shape[1], k, replace=False)])
        assert writer is not None
        if not writer.chips:
            raise InputError(
                f"{images[0]}: no valid chips ({dropped} chip(s) of {chip} px had more than "
                f"{cfg.max_invalid:.0%} invalid pixels; check overlap, nodata and --chip-size)"
            )
        block = cfg.block
        while True:
            places = [
                ChipPlace(s, (s, r // (block * chip), c // (block * chip)), b)
                for s, r, c, b in places_px
            ]
            if block == 1 or len({p.block for p in places}) >= cfg.min_blocks:
                break
            block -= 1
        splits = blocked_split(places, fractions=cfg.fractions, seed=cfg.seed, buffer=cfg.buffer)
        stats = fit.chip_stats(writer.chips)
        dtype = str(writer.image_dtype)
        norms = fit.fit_normalizations(cfg, splits["train"], stats, samples, bands, dtype)
        folds = []
        if cfg.folds:
            for f in kfold_split(places, cfg.folds, seed=cfg.seed, buffer=cfg.buffer):
                f["normalization"] = fit.fit_normalizations(
                    cfg, f["train"], stats, samples, bands, dtype
                )
                folds.append(f)
        area = 0.0
        for si, g in enumerate(grids):
            span = range(-(-chip // stride))
            cells = {
                (r // stride + i, c // stride + j)
                for s, r, c, _ in places_px
                if s == si
                for i in span
                for j in span
            }
            area += chip_area_km2(g, len(cells), min(stride, chip))
        extra_entries = []  # one per stored band; a multi-band layer NAME gives NAME_<band>
        layers = zip(extra_names, kinds, extras, gaps, band_counts or [], strict=True)
        for li, (n, k, e, gap, nb) in enumerate(layers):
            methods = sorted({r["extras"][li] for r in resamplings})
            for b in range(nb):
                extra_entries.append(
                    {
                        "name": n if nb == 1 else f"{n}_{_band_label(e, b)}",
                        "layer": n,
                        "band": b + 1,
                        "kind": k,
                        "unit": "m" if k == "height" else "stored values of the source",
                        "source_unit": (cfg.z_unit or detect_z_unit(e) or "m (assumed)")
                        if k == "height"
                        else None,
                        "resampling": "/".join(methods),
                        "vertical_crs": dems_vertical_crs([e]) if k == "height" else None,
                        "gaps": gap,
                        "file": str(e),
                    }
                )
        g0 = grids[0]
        manifest = {
            "created_by": f"demgen {__version__}",
            "source": "rasters",
            "chip_size": chip,
            "stride": stride,
            "image_dtype": dtype,
            "image_units": "stored values of the source (DN or scaled reflectance)",
            "z_unit": "m",
            "z_source_unit": cfg.z_unit or z_source or "m (assumed)",
            "extra_layers": [e["name"] for e in extra_entries],
            "extras": extra_entries,
            "max_invalid": cfg.max_invalid,
            "dropped_invalid": dropped,
            "area_km2": area,
            "pixel_size_m": list(pixel_size_m(g0.crs, g0.transform, g0.width, g0.height)),
            "vertical_crs": vertical_crs,
            "scenes": [
                {
                    "name": s.name,
                    "image_files": [str(f) for f in s.files],
                    "bands": [
                        {"name": b.name, "file": str(b.path), "index": b.index} for b in s.bands
                    ],
                    "dem_files": [str(d) for d in dems],
                    "cloud_masks": [str(c) for c in cloud_masks],
                    "extra_files": [str(e) for e in extras],
                    "grid": g.to_dict(),
                    "pixel_size_m": list(pixel_size_m(g.crs, g.transform, g.width, g.height)),
                    "resampling": r,
                }
                for s, g, r in zip(scenes, grids, resamplings, strict=True)
            ],
            "crs": common_crs.to_string() if common_crs else None,
            "config": {k: v for k, v in asdict(cfg).items() if k != "extra_names"},
            "normalization": norms,
            "splits": {
                "strategy": "spatial-blocks",
                "block": block,
                "buffer_chips": cfg.buffer,
                "seed": cfg.seed,
                "fractions": list(cfg.fractions),
                **splits,
            },
            "folds": folds,
        }
        return writer.commit(to_plain(manifest))
    finally:
        if writer is not None and not writer.committed:
            writer.abort()


def _band_label(path: str | Path, b: int) -> str:
    """Band ``b`` (0-based) of a raster by its description, else its 1-based number."""
    with rasterio.open(path) as ds:
        desc = ds.descriptions[b] if b < len(ds.descriptions) else None
    return str(desc) if desc else str(b + 1)
