"""Chip arrays without georeferencing (``.npz``, e.g. ImageToDEM's ``rgb``/``dem``) to a chip
store of the same format, with random per-chip splits (no ground footprint is known).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from demgen import __version__
from demgen.data.chips import ChipStoreWriter
from demgen.data.prepare import fit
from demgen.data.prepare.config import PrepareConfig
from demgen.data.splits import ChipPlace, blocked_split, kfold_split
from demgen.errors import InputError
from demgen.io.geodesy import UNKNOWN_DATUM
from demgen.io.jsonio import to_plain
from demgen.io.raster import default_band_names


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
    bands = default_band_names(n_bands)
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
        stats = fit.chip_stats(writer.chips)
        dt = str(np.dtype(dtype))
        norms = fit.fit_normalizations(cfg, splits["train"], stats, samples, bands, dt)
        folds = []
        if cfg.folds:
            for fo in kfold_split(places, cfg.folds, seed=cfg.seed, buffer=0):
                fo["normalization"] = fit.fit_normalizations(
                    cfg, fo["train"], stats, samples, bands, dt
                )
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
