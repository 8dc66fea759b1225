"""The time-series chip store: dated chips of each place, spatially split, with their pairs.

Built from time-series folders (:mod:`demgen.data.timelayout`: synthetic, SpaceNet 7, a
Sentinel-2 series) by :func:`build_time_store`. Layout::

    manifest.json   format, bands, image dtype and reflectance scale (the multiplier from
                    stored values to reflectance, 1e-4 for uint16 x 10000), chip size, pixel size,
                    places (name, dates), locations (place, row, col, ground bounds, split),
                    the frame table (location, date index, days since the first date,
                    valid fraction), the pairs, the image normalization fitted on the
                    training locations' clear pixels, what the mask means
    frames.npy      (F, C, H, W) the dated image chips as the files store them
    masks.npy       (F, H, W) uint8 0/1: buildings (or the change mask) of each dated chip
    clouds.npy      (F, H, W) uint8 0/1: unusable pixels (clouds, shadows, nodata)

**Places, locations and splits.** Each place is cut into non-overlapping chips (a
*location*: the same ground at every date). Locations are split spatially by
:func:`demgen.data.splits.blocked_split` (whole blocks, a buffer of ``buffer`` chip widths
between a training location and any val/test one), and every date of a location is in its
location's split: no ground is seen at one date in training and at another in testing.

**Pairs.** A location's day 0 is its first date with at most ``t0_max_invalid`` unusable
pixels; every later date with at most ``max_invalid`` of them makes a pair
``(day 0, t)``: the day-0 image and the mask at ``t`` are the inputs, the image at ``t`` the
target, ``days(t) - days(day 0)`` the time gap.

Memory: one date of one place is read at a time (places are scene-sized).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from demgen.data.chip_writer import _NpyAppender
from demgen.data.normalize import PercentileImageNorm, default_reflectance_scale, norm_from_dict
from demgen.data.splits import ChipPlace, blocked_split
from demgen.data.timelayout import read_times, reflectance_multiplier
from demgen.errors import InputError
from demgen.io.geodesy import mean_pixel_size_m, pixel_size_m
from demgen.io.jsonio import write_json
from demgen.io.raster import atomic_dir, read_raster

TIME_STORE_FORMAT = "demgen-timestore/1"
SAMPLES_PER_FRAME = 64  # training pixels per dated chip kept to fit the image percentiles


def _read_frame(place: Path, frame: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (C, H, W) as stored, mask (H, W) uint8, unusable (H, W) bool) of one date."""
    d = place / str(frame["dir"])
    image, prof = read_raster(d / "image.tif")
    mask, _ = read_raster(d / "buildings.tif")
    clouds, _ = read_raster(d / "clouds.tif")
    nodata = prof.get("nodata")
    bad = np.asarray(clouds[0]) > 0
    if np.issubdtype(image.dtype, np.floating):
        bad |= ~np.isfinite(image).all(axis=0)
    if nodata is not None:
        bad |= (image == nodata).any(axis=0)
    return image, (np.asarray(mask[0]) > 0).astype(np.uint8), bad


def build_time_store(
    places: Sequence[str | Path],
    out: str | Path,
    *,
    chip_size: int = 64,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    block: int = 2,
    buffer: float = 1.0,
    seed: int = 0,
    max_invalid: float = 0.2,
    t0_max_invalid: float = 0.01,
) -> Path:
    """Write the time store ``out`` from the time-series folders ``places`` (module
    docstring); atomic (a temporary sibling renamed into place). Returns ``out``."""
    if not places:
        raise InputError("no time-series folder given")
    if chip_size < 8:
        raise InputError(f"chip size {chip_size} is too small (at least 8)")
    docs = [read_times(p) for p in places]
    bands = list(docs[0]["bands"])
    if any(list(d["bands"]) != bands for d in docs):
        raise InputError("the places have different bands")
    out = Path(out)
    with atomic_dir(out) as tmp:
        manifest = _write(places, docs, tmp, chip_size, bands)
        _split_and_pair(manifest, fractions, block, buffer, seed, max_invalid, t0_max_invalid)
        _fit_norm(manifest, tmp, seed)
        write_json(tmp / "manifest.json", manifest)
    return out


def _write(places, docs, tmp: Path, chip: int, bands: list[str]) -> dict[str, Any]:
    appenders: dict[str, _NpyAppender] = {}
    locations: list[dict[str, Any]] = []
    frames: dict[str, list] = {"location": [], "t": [], "days": [], "valid": []}
    place_info, dtype, pixel = [], None, None
    for p, (place, doc) in enumerate(zip(places, docs, strict=True)):
        place = Path(place)
        H, W = int(doc["height"]), int(doc["width"])
        if chip > H or chip > W:
            raise InputError(f"{place}: {W}x{H} px is smaller than one {chip}-px chip")
        from rasterio.transform import Affine

        tr = Affine(*doc["transform"][:6])
        if pixel is None and doc.get("crs"):
            pixel = mean_pixel_size_m(pixel_size_m(doc["crs"], tr, W, H))
        first = len(locations)
        for r in range(0, H - chip + 1, chip):
            for c in range(0, W - chip + 1, chip):
                x0, y0 = tr * (c, r)
                x1, y1 = tr * (c + chip, r + chip)
                bounds = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
                locations.append({"place": p, "row": r, "col": c, "bounds": bounds})
        for t, fr in enumerate(doc["frames"]):
            image, mask, bad = _read_frame(place, fr)
            if image.shape[0] != len(bands):
                raise InputError(f"{place}/{fr['dir']}: {image.shape[0]} bands, not {len(bands)}")
            if dtype is None:
                dtype = image.dtype
                appenders = {
                    "frames": _NpyAppender(tmp / "frames.npy", dtype, (len(bands), chip, chip)),
                    "masks": _NpyAppender(tmp / "masks.npy", np.uint8, (chip, chip)),
                    "clouds": _NpyAppender(tmp / "clouds.npy", np.uint8, (chip, chip)),
                }
            for i in range(first, len(locations)):
                r, c = locations[i]["row"], locations[i]["col"]
                win = (slice(r, r + chip), slice(c, c + chip))
                appenders["frames"].append(image[(slice(None), *win)])
                appenders["masks"].append(mask[win])
                appenders["clouds"].append(bad[win].astype(np.uint8))
                frames["location"].append(i)
                frames["t"].append(t)
                frames["days"].append(int(fr["days_since_first"]))
                frames["valid"].append(round(1.0 - float(bad[win].mean()), 6))
        place_info.append({"name": place.name, "path": str(place), "dates": doc["dates"],
                           "crs": doc.get("crs"), "source": doc.get("source"),
                           "mask_kind": doc.get("mask_kind", "buildings")})  # fmt: skip
    for a in appenders.values():
        a.close()
    scale = reflectance_multiplier(docs[0]) or default_reflectance_scale(dtype)
    return {
        "format": TIME_STORE_FORMAT,
        "bands": bands,
        "image_dtype": str(np.dtype(dtype)),
        "reflectance_scale": float(scale),
        "chip_size": chip,
        "pixel_size_m": [pixel, pixel] if pixel else None,
        "vertical_crs": "unknown",
        "mask_kind": place_info[0]["mask_kind"],
        "places": place_info,
        "locations": locations,
        "frames": frames,
    }


def _split_and_pair(m, fractions, block, buffer, seed, max_invalid, t0_max_invalid) -> None:
    chip = m["chip_size"]
    span = block * chip
    cells = [ChipPlace(scene=loc["place"], bounds=tuple(loc["bounds"]),
                       block=(loc["place"], loc["row"] // span, loc["col"] // span))
             for loc in m["locations"]]  # fmt: skip
    split = blocked_split(cells, fractions=fractions, seed=seed, buffer=buffer)
    m["splits"] = {k: sorted(int(i) for i in v) for k, v in split.items()}
    of = {i: k for k, v in m["splits"].items() for i in v}
    for i, loc in enumerate(m["locations"]):
        loc["split"] = of.get(i, "excluded")
    fr = m["frames"]
    by_loc: dict[int, list[int]] = {}
    for f, loc in enumerate(fr["location"]):
        by_loc.setdefault(loc, []).append(f)
    pairs = []
    for _, fs in sorted(by_loc.items()):
        fs = sorted(fs, key=lambda f: fr["t"][f])
        day0 = next((f for f in fs if fr["valid"][f] >= 1.0 - t0_max_invalid), None)
        if day0 is None:
            continue
        for f in fs:
            if fr["t"][f] > fr["t"][day0] and fr["valid"][f] >= 1.0 - max_invalid:
                pairs.append([day0, f])
    m["pairs"] = pairs
    m["pair_rule"] = {"t0_max_invalid": t0_max_invalid, "max_invalid": max_invalid}


def _fit_norm(m: dict[str, Any], tmp: Path, seed: int) -> None:
    """Percentile normalization from clear pixels of the training locations' dated chips."""
    frames = np.load(tmp / "frames.npy", mmap_mode="r")
    clouds = np.load(tmp / "clouds.npy", mmap_mode="r")
    train = {i for i in m["splits"].get("train", [])}
    rng = np.random.default_rng(seed)
    samples = []
    for f, loc in enumerate(m["frames"]["location"]):
        if loc not in train:
            continue
        ok = np.flatnonzero(np.asarray(clouds[f]).ravel() == 0)
        if ok.size:
            pick = rng.choice(ok, min(SAMPLES_PER_FRAME, ok.size), replace=False)
            samples.append(np.asarray(frames[f]).reshape(len(m["bands"]), -1)[:, pick])
    if not samples:
        raise InputError("no clear pixel in the training split to fit the image normalization")
    pix = np.concatenate(samples, axis=1).astype(np.float64)
    m["normalization"] = {"image": PercentileImageNorm.fit(pix, m["bands"]).to_dict()}


class TimeStore:
    """Read a time store (memory-mapped arrays, the manifest, pairs per split)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.exists():
            raise InputError(f"{self.path}: not a demgen time store (no manifest.json)")
        self.manifest = json.loads(mf.read_text())
        if self.manifest.get("format") != TIME_STORE_FORMAT:
            raise InputError(f"{self.path}: format is not {TIME_STORE_FORMAT}")
        self.frames = np.load(self.path / "frames.npy", mmap_mode="r")
        self.masks = np.load(self.path / "masks.npy", mmap_mode="r")
        self.clouds = np.load(self.path / "clouds.npy", mmap_mode="r")
        self.extras: list = []  # the chip store's refinement layers: none here

    @property
    def bands(self) -> list[str]:
        return list(self.manifest["bands"])

    @property
    def image_norm(self) -> Any:
        return norm_from_dict(self.manifest["normalization"]["image"])

    def location_split(self, f: int) -> str:
        return self.manifest["locations"][self.manifest["frames"]["location"][f]]["split"]

    def pairs(self, split: str) -> np.ndarray:
        """(P, 2) frame indices (day 0, t) of the pairs of ``split`` (``all``: every pair)."""
        if split not in ("train", "val", "test", "all"):
            raise InputError(f"{self.path}: no split {split!r} (train, val, test, all)")
        p = [q for q in self.manifest["pairs"]
             if split == "all" or self.location_split(q[0]) == split]  # fmt: skip
        return np.asarray(p, np.int64).reshape(-1, 2)

    def frame_indices(self, split: str, min_valid: float = 0.8) -> np.ndarray:
        """Dated chips of ``split`` with at least ``min_valid`` usable pixels."""
        fr = self.manifest["frames"]
        return np.asarray([f for f in range(len(fr["t"])) if fr["valid"][f] >= min_valid
                           and (split == "all" or self.location_split(f) == split)],
                          np.int64)  # fmt: skip

    def days(self, f: int) -> int:
        return int(self.manifest["frames"]["days"][f])


__all__ = ["TIME_STORE_FORMAT", "TimeStore", "build_time_store"]
