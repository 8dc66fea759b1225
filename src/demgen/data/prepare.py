"""Turn rasters (or earlier ``.npz`` chip arrays) into a chip store with honest splits.

:func:`prepare_rasters` aligns imagery, DEMs, extra layers and cloud masks onto one grid
per scene (:mod:`demgen.data.align`), cuts chips strip by strip (one chip row of the grid
in memory at a time), drops chips with too many invalid pixels, splits the rest spatially
(:mod:`demgen.data.splits`), fits the named normalizations on the training split only
(:mod:`demgen.data.normalize`) and writes the store atomically (:mod:`demgen.data.chips`).
The manifest records the grid's pixel size in metres and the DEMs' vertical datum
(:mod:`demgen.data.geometa`), as strict JSON (NaN statistics become null).
:func:`prepare_npz` imports chip arrays without georeferencing into the same store format.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from demgen import __version__
from demgen.data.align import (
    FEET_TO_METRES,
    AlignedScene,
    detect_z_unit,
    image_scenes,
    open_checked,
    scene_grid,
)
from demgen.data.chips import ChipStoreWriter
from demgen.data.geometa import chip_area_km2, dems_vertical_crs, manifest_geodesy_line
from demgen.data.normalize import (
    ELEVATION_STRATEGIES,
    IMAGE_STRATEGIES,
    ChipStats,
    fit_elevation_norm,
    fit_image_norm,
)
from demgen.data.splits import ChipPlace, blocked_split, kfold_split
from demgen.errors import InputError
from demgen.io.geodesy import UNKNOWN_DATUM, pixel_size_m
from demgen.io.jsonio import to_plain
from demgen.io.raster import GDAL_CACHE_MB, bounded_gdal_cache

__all__ = [
    "HEIGHT_EXTRAS",
    "PrepareConfig",
    "chip_area_km2",
    "dems_vertical_crs",
    "extra_kind",
    "manifest_geodesy_line",
    "prepare_npz",
    "prepare_rasters",
]

# Extra layers with these names hold heights: they follow --z-unit like the DEM and are
# stored in metres. Any other name is stored as the source's values unless listed in
# ``PrepareConfig.extra_heights`` (--extra-heights).
HEIGHT_EXTRAS = ("dsm", "dtm", "dem", "initial_dsm", "initial_dem", "initial_dtm", "height")


def extra_kind(name: str, heights: Sequence[str] = ()) -> str:
    """'height' for a height layer (a known height name or one listed in ``heights``)."""
    low = name.lower()
    return "height" if low in HEIGHT_EXTRAS or low in {h.lower() for h in heights} else "value"


@dataclass
class PrepareConfig:
    """How to chip, mask, split and normalize (every field has a CLI flag)."""

    chip_size: int = 256
    stride: int | None = None  # default: chip_size (no overlap)
    grid: str = "dem"  # "dem" | "image"; or crs/resolution below
    crs: str | None = None
    resolution: float | None = None
    bands: list[str] | None = None
    normalize: str = "global"  # elevation strategy
    image_normalize: str = "percentile"
    image_scale: float | None = None  # for image "scale"/"band-zscore"; default from dtype
    image_resampling: str = "auto"  # auto: average when shrinking >= 1.5x, else bilinear
    z_unit: str | None = None  # None: metres unless the DEM's metadata says feet (an error)
    max_invalid: float = 0.2  # drop chips with a larger fraction of invalid pixels
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    block: int = 4  # chips per side of a split block (shrunk for small inputs)
    buffer: float = 1.0  # chip widths between a training chip and any val/test chip
    folds: int = 0  # k > 1: also store k spatially blocked folds
    seed: int = 0
    samples_per_chip: int = 256  # pixels per chip kept to fit image percentiles
    min_blocks: int = 6
    extra_names: list[str] = field(default_factory=list)  # default: each file's stem
    extra_heights: list[str] = field(default_factory=list)  # more height-layer names
    # extra layers whose nodata are gaps of that layer (NaN in extra.npy), not invalid pixels
    extra_gaps: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.normalize not in ELEVATION_STRATEGIES:
            raise InputError(f"unknown --normalize {self.normalize!r} ({ELEVATION_STRATEGIES})")
        if self.image_normalize not in IMAGE_STRATEGIES:
            raise InputError(f"unknown --image-normalize {self.image_normalize!r}")
        if self.chip_size < 8:
            raise InputError(f"--chip-size {self.chip_size} is too small (at least 8)")
        if self.stride is not None and self.stride <= 0:
            raise InputError("--stride must be positive")
        if not 0 <= self.max_invalid < 1:
            raise InputError(f"--max-invalid {self.max_invalid} must be in [0, 1)")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or sum(self.fractions) <= 0:
            raise InputError(f"--split {self.fractions} needs three non-negative fractions")
        if self.z_unit not in (None, "m", "ft"):
            raise InputError(f"--z-unit {self.z_unit!r} must be m or ft")
        if self.folds == 1 or self.folds < 0:
            raise InputError("--folds must be 0 (none) or at least 2")


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
        stats = _chip_stats(writer.chips)
        dtype = str(writer.image_dtype)
        norms = _fit(cfg, splits["train"], stats, samples, bands, dtype)
        folds = []
        if cfg.folds:
            for f in kfold_split(places, cfg.folds, seed=cfg.seed, buffer=cfg.buffer):
                f["normalization"] = _fit(cfg, f["train"], stats, samples, bands, dtype)
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


def _chip_stats(chips: list[dict[str, Any]]) -> ChipStats:
    z = np.array([[np.nan if v is None else v for v in c["z"]] for c in chips], np.float64)
    return ChipStats(z[:, 0], z[:, 1], z[:, 2], z[:, 3], z[:, 4])


def _fit(
    cfg: PrepareConfig,
    train: list[int],
    stats: ChipStats,
    samples: list[np.ndarray],
    bands: list[str],
    dtype: str,
) -> dict[str, Any]:
    if not train:
        raise InputError("no training chips left after splitting (use more data or --block 1)")
    elev = fit_elevation_norm(cfg.normalize, stats.subset(train), cfg.chip_size)
    pix = np.concatenate([samples[i] for i in train], axis=1).astype(np.float64)
    img = fit_image_norm(cfg.image_normalize, pix, bands, scale=cfg.image_scale, dtype=dtype)
    return {
        "image": img.to_dict(),
        "elevation": elev.to_dict(),
        "fitted_on": "train",
        "train_chips": len(train),
    }


def _npz_keys(path: Path, z: Any, keys: Sequence[str] | None) -> tuple[str, str]:
    names = list(z.files)
    if keys:
        if len(keys) != 2:
            raise InputError(f"--npz-keys needs IMAGE_KEY,DEM_KEY, got {','.join(keys)}")
        for k in keys:
            if k not in names:
                raise InputError(f"{path}: no array {k!r} (arrays: {', '.join(names)})")
        return keys[0], keys[1]
    shapes = {k: z[k].shape for k in names}
    img = [k for k in names if len(shapes[k]) == 4]
    dem = [k for k in names if len(shapes[k]) == 3]
    if len(img) != 1 or len(dem) != 1:
        raise InputError(
            f"{path}: cannot tell image and DEM arrays apart ({shapes}); pass --npz-keys IMG,DEM"
        )
    return img[0], dem[0]


def prepare_npz(
    files: Sequence[str | Path],
    out: str | Path,
    config: PrepareConfig | None = None,
    *,
    keys: Sequence[str] | None = None,
    overwrite: bool = False,
    z_unit: str = "relative",
) -> Path:
    """Import chip arrays without georeferencing (e.g. ImageToDEM's ``rgb``/``dem``).

    Images may be (N, H, W, C) or (N, C, H, W); DEMs (N, H, W). Heights are stored as
    given, in ``z_unit`` ("relative": unitless heights of unknown scale). Provenance is the
    file and the index in it; splits are random per chip (no ground footprint is known).
    """
    cfg = config or PrepareConfig()
    cfg.check()
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists (pass --overwrite to replace it)")
    loaded = []
    for f in map(Path, files):
        if not f.exists():
            raise InputError(f"{f}: no such file")
        try:
            with np.load(f) as z:
                ik, dk = _npz_keys(f, z, keys)
                img, dem = np.asarray(z[ik]), np.asarray(z[dk])
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"{f}: not a readable .npz ({str(exc).splitlines()[0]})") from exc
        if img.shape[-1] <= 4 and img.shape[1] == img.shape[2]:
            img = img.transpose(0, 3, 1, 2)
        if dem.ndim != 3 or img.shape[0] != dem.shape[0] or img.shape[2:] != dem.shape[1:]:
            raise InputError(f"{f}: image {img.shape} and DEM {dem.shape} arrays do not match")
        if dem.shape[1] != dem.shape[2]:
            raise InputError(f"{f}: chips must be square, got {dem.shape[1:]}")
        loaded.append((f, ik, dk, img, dem))
    sizes = {d.shape[1] for *_, d in loaded}
    chans = {i.shape[1] for *_, i, _ in loaded}
    if len(sizes) != 1 or len(chans) != 1:
        raise InputError(f"{files[0]}: files differ in chip size {sizes} or bands {chans}")
    chip, n_bands = sizes.pop(), chans.pop()
    bands = ["red", "green", "blue"] if n_bands == 3 else [f"band{i + 1}" for i in range(n_bands)]
    if cfg.bands:
        bands = [str(b) for b in cfg.bands]
        if len(bands) != n_bands:
            raise InputError(f"--bands names {len(bands)} bands, the arrays have {n_bands}")
    dtype = np.result_type(*[i.dtype for *_, i, _ in loaded])
    rng = np.random.default_rng(cfg.seed)
    samples, places, dropped = [], [], 0
    with ChipStoreWriter(
        out, chip_size=chip, bands=bands, image_dtype=dtype, overwrite=overwrite
    ) as writer:
        for fi, (f, _ik, _dk, img, dem) in enumerate(loaded):
            for j in range(img.shape[0]):
                h = dem[j].astype(np.float32)
                m = np.isfinite(h)
                if 1.0 - m.mean() > cfg.max_invalid:
                    dropped += 1
                    continue
                writer.add(img[j], h, m, {"file": str(f), "index": j, "scene": fi})
                places.append(ChipPlace(fi, (fi, -1, j), None))
                pix = img[j].reshape(n_bands, -1)[:, m.ravel()]
                samples.append(
                    pix[
                        :,
                        rng.choice(
                            pix.shape[1], min(cfg.samples_per_chip, pix.shape[1]), replace=False
                        ),
                    ]
                )
        if not writer.chips:
            raise InputError(f"{files[0]}: no valid chips")
        splits = blocked_split(places, fractions=cfg.fractions, seed=cfg.seed, buffer=0)
        stats = _chip_stats(writer.chips)
        dt = str(np.dtype(dtype))
        norms = _fit(cfg, splits["train"], stats, samples, bands, dt)
        folds = []
        if cfg.folds:
            for fo in kfold_split(places, cfg.folds, seed=cfg.seed, buffer=0):
                fo["normalization"] = _fit(cfg, fo["train"], stats, samples, bands, dt)
                folds.append(fo)
        manifest = {
            "created_by": f"demgen {__version__}",
            "source": "npz",
            "chip_size": chip,
            "stride": chip,
            "image_dtype": dt,
            "image_units": "stored values of the source",
            "z_unit": z_unit,
            "z_source_unit": z_unit,
            "extra_layers": [],
            "extras": [],
            "max_invalid": cfg.max_invalid,
            "dropped_invalid": dropped,
            "area_km2": None,
            "pixel_size_m": None,
            "vertical_crs": UNKNOWN_DATUM,
            "crs": None,
            "scenes": [
                {
                    "name": f.name,
                    "file": str(f),
                    "keys": [ik, dk],
                    "chips": int(i.shape[0]),
                    "grid": None,
                }
                for f, ik, dk, i, _ in loaded
            ],
            "config": {k: v for k, v in asdict(cfg).items() if k != "extra_names"},
            "normalization": norms,
            "splits": {
                "strategy": "random-chips (no georeferencing: chips assumed disjoint)",
                "block": 1,
                "buffer_chips": 0,
                "seed": cfg.seed,
                "fractions": list(cfg.fractions),
                **splits,
            },
            "folds": folds,
        }
        return writer.commit(to_plain(manifest))
