"""Import a Sentinel-2 L2A time series (one GeoTIFF pair per date) into demgen's time layout.

The input folder holds, per date, ``YYYY-MM-DD_image.tif`` (bands B2 B3 B4 B8, reflectance
x 10000, nodata 0) and ``YYYY-MM-DD_scl.tif`` (the L2A scene classification, SCL) on one
grid. Each date becomes a frame of :mod:`demgen.data.timelayout`: ``image.tif`` (the bands
as read), ``clouds.tif`` (unusable pixels: the SCL classes of :data:`SCL_UNUSABLE`, or 0 in
any band) and ``buildings.tif``, which here holds the CHANGE mask of the date (there are no
buildings; ``times.json`` says ``mask_kind: "change"``).

**Change rule** (``change="ndvi"``, :class:`NdviChangeRule`; every parameter is recorded in
times.json's ``thresholds``). NDVI = (B8 - B4) / (B8 + B4) on clear pixels only.

- Only *rule dates* are compared: dates inside the growing season (``season``, day of year,
  1 June .. 30 September by default) whose cloud fraction is at most ``max_cloud_fraction``
  (the "clear" pixels of a mostly cloudy date are often hazy cloud edges SCL missed).
  At every other date, and at a cloudy pixel of a rule date, a pixel carries its previous
  state.
- Baseline per pixel: the median NDVI of its clear rule-date observations in the first
  ``baseline_days`` after the first rule date, extended to its first ``baseline_min_obs``
  clear observations when that year has fewer.
- Drop per observation: baseline - NDVI, less the date's scene offset (the median drop over
  all clear pixels of the date) when ``scene_relative``: it removes what moves the whole
  scene at once (phenology, haze, illumination) and holds while less than half the area
  has changed.
- Current value: the pixel's drops at its clear observations ``r - half_window .. r +
  half_window`` (its own sequence of clear rule-date observations, so clouds do not shorten
  the window); a pixel is changed at observation r when the window median (the lower one of
  an even, truncated window) exceeds ``threshold``: a single noisy date cannot trigger it,
  and a change seen only at the series' last observation is not confirmed.
- Once changed, a pixel stays changed (clear-cuts regrow in NDVI within two or three
  summers, but the surface is not the first date's forest again).

**Why a season window** (measured on the Romania series of ``../shared/realdata``, 140
dates 2015-08 .. 2021-01, deciduous forest): the scene-median NDVI of clear dates is 0.86 in
June-September (10-90 %: 0.75-0.91), 0.52 in April, 0.51 in March and 0.29 in December-
February: a seasonal amplitude of about 0.35 to leaf-off and 0.6 to winter, larger than a
clear-cut's drop in summer (0.2-0.4), so no threshold above the amplitude would find a cut.
Within the season the scene median swings by about 0.15 (senescence from mid-September, and
one hazy date at 0.49), which the scene offset removes; the 0.2 threshold lies above the
remaining single-pixel noise of stable pixels (median 0.0, 90th percentile 0.06) and below
the gaps' drop. With the defaults the series has 48 rule dates and 16 % of the area is
changed at the end (river-side strip 2017, group-selection gaps 2018-2020).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from demgen.data.timelayout import TIMES_FILE, frame_dir_name, parse_date, times_document
from demgen.errors import InputError
from demgen.io.jsonio import write_json
from demgen.io.raster import atomic_dir, read_raster, same_grid, write_raster

S2_NAME = re.compile(r"^(.+)_(image|scl)\.tif$")
S2_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B8")
REFLECTANCE_SCALE = 1e-4
SOURCE = "sentinel-2 L2A series"

#: SCL classes treated as unusable. Source: ESA, Sentinel-2 Level-2A product specification
#: (S2-PDGS-TAS-DI-PSD, scene classification of Sen2Cor). Kept as usable: 2 dark area /
#: topographic shadow, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified (cloud low
#: probability).
SCL_UNUSABLE: dict[int, str] = {
    0: "no data",
    1: "saturated or defective",
    3: "cloud shadows",
    8: "cloud medium probability",
    9: "cloud high probability",
    10: "thin cirrus",
    11: "snow or ice",
}


@dataclasses.dataclass(frozen=True)
class NdviChangeRule:
    """Parameters of the NDVI-drop change rule (module docstring)."""

    threshold: float = 0.2
    half_window: int = 1
    season: tuple[int, int] | None = (152, 273)
    max_cloud_fraction: float = 0.5
    baseline_days: int = 365
    baseline_min_obs: int = 3
    scene_relative: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 2:
            raise InputError(f"change threshold {self.threshold} is not in (0, 2) NDVI")
        if self.half_window < 1 or self.baseline_min_obs < 1 or self.baseline_days < 0:
            raise InputError("half_window and baseline_min_obs must be >= 1, baseline_days >= 0")
        if self.season is not None and not all(1 <= d <= 366 for d in self.season):
            raise InputError(f"season {self.season} is not two days of year (1-366)")

    def in_season(self, date: dt.date) -> bool:
        """True when `date` lies in the season window (which may wrap over the new year)."""
        if self.season is None:
            return True
        a, b = self.season
        doy = date.timetuple().tm_yday
        return a <= doy <= b if a <= b else (doy >= a or doy <= b)

    def describe(self) -> str:
        """One paragraph for times.json's ``change_rule``."""
        season = "all dates" if self.season is None else (
            f"dates with day of year {self.season[0]}-{self.season[1]}"
        )  # fmt: skip
        rel = ", less the date's median drop over all clear pixels" if self.scene_relative else ""
        return (
            f"NDVI = (B8 - B4) / (B8 + B4) on clear pixels of rule dates ({season} and cloud "
            f"fraction <= {self.max_cloud_fraction}); baseline = per-pixel median NDVI of the "
            f"clear rule observations within {self.baseline_days} days of the first rule date "
            f"(at least the first {self.baseline_min_obs}); drop = baseline - NDVI{rel}; "
            f"changed when the median drop of the pixel's clear observations r-"
            f"{self.half_window}..r+{self.half_window} (lower median if even) exceeds "
            f"{self.threshold}; once changed stays changed; cloudy pixels and other dates "
            "carry the previous state"
        )


def list_series(folder: str | Path) -> list[tuple[dt.date, Path, Path]]:
    """(date, image path, SCL path) of every date in `folder`, sorted by date.

    Every ``.tif`` must be named ``YYYY-MM-DD_image.tif`` or ``YYYY-MM-DD_scl.tif``, and each
    image needs its SCL (and each SCL its image); InputError (one line) otherwise.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    pairs: dict[dt.date, dict[str, Path]] = {}
    for p in sorted(root.iterdir()):
        if p.suffix.lower() not in (".tif", ".tiff") or p.name.startswith("."):
            continue
        m = S2_NAME.match(p.name)
        if m is None:
            raise InputError(f"{p}: not a DATE_image.tif or DATE_scl.tif name (YYYY-MM-DD)")
        try:
            date = parse_date(m.group(1))
        except InputError as exc:
            raise InputError(f"{p}: {exc}") from exc
        pairs.setdefault(date, {})[m.group(2)] = p
    if not pairs:
        raise InputError(f"{root}: no DATE_image.tif / DATE_scl.tif files")
    out = []
    for date in sorted(pairs):
        have = pairs[date]
        for kind, other in (("image", "scl"), ("scl", "image")):
            if kind not in have:
                raise InputError(
                    f"{root / f'{date.isoformat()}_{kind}.tif'}: no such file "
                    f"({kind} of {have[other].name})"
                )  # fmt: skip
        out.append((date, have["image"], have["scl"]))
    return out


def unusable_mask(scl: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """bool (H, W): SCL class in :data:`SCL_UNUSABLE`, or 0 in any band of `image`."""
    bad = np.isin(np.asarray(scl), list(SCL_UNUSABLE))
    if image is not None:
        bad |= (np.asarray(image) == 0).any(axis=0)
    return bad


def ndvi(image: np.ndarray, unusable: np.ndarray | None = None) -> np.ndarray:
    """float32 (H, W) NDVI of a (B2, B3, B4, B8) image; NaN where unusable or B8 + B4 = 0."""
    red, nir = image[2].astype(np.float32), image[3].astype(np.float32)
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(total > 0, (nir - red) / total, np.nan).astype(np.float32)
    if unusable is not None:
        out[unusable] = np.nan
    return out


def _nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as meant
        return np.nanmedian(a, axis=axis)


def _window_drop(drop: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """(window value at each clear observation (T, H, W), clear mask): see module rule."""
    valid = np.isfinite(drop)
    order = np.argsort(~valid, axis=0, kind="stable")  # each pixel's clear observations first
    packed = np.take_along_axis(drop, order, axis=0)
    k_obs = packed.shape[0]
    pad = np.full((half, *packed.shape[1:]), np.nan, np.float32)
    padded = np.concatenate([pad, packed, pad])
    win = np.stack([padded[j : j + k_obs] for j in range(2 * half + 1)], axis=-1)
    count = np.isfinite(win).sum(axis=-1)
    desc = -np.sort(np.where(np.isfinite(win), -win, np.inf), axis=-1)  # NaN (-inf) last
    value = np.take_along_axis(desc, (count // 2)[..., None], axis=-1)[..., 0]
    value = np.where(count >= 2, value, np.nan)
    rank = np.clip(np.cumsum(valid, axis=0) - 1, 0, k_obs - 1)
    return np.where(valid, np.take_along_axis(value, rank, axis=0), np.nan), valid


def ndvi_change(
    ndvi_series: np.ndarray,
    dates: Sequence[dt.date],
    cloud_fraction: Sequence[float],
    rule: NdviChangeRule | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """bool (T, H, W) change masks of an NDVI series (NaN = unusable), and what it used.

    The info dict holds ``rule_date`` (bool per date), ``ndvi_offset`` (the scene offset per
    rule date, None elsewhere) and ``baseline_fraction`` (share of pixels with a baseline).
    """
    rule = rule or NdviChangeRule()
    series = np.asarray(ndvi_series, dtype=np.float32)
    n_dates = series.shape[0]
    use = np.array([rule.in_season(d) and cf <= rule.max_cloud_fraction
                    for d, cf in zip(dates, cloud_fraction, strict=True)], bool)  # fmt: skip
    idx = np.flatnonzero(use)
    changed = np.zeros(series.shape, bool)
    info: dict[str, Any] = {"rule_date": use.tolist(), "ndvi_offset": [None] * n_dates,
                            "baseline_fraction": 0.0}  # fmt: skip
    if idx.size == 0:
        return changed, info
    obs = series[idx]
    valid = np.isfinite(obs)
    days = np.array([(dates[i] - dates[idx[0]]).days for i in idx])
    rank = np.cumsum(valid, axis=0) - 1
    in_base = valid & ((days <= rule.baseline_days)[:, None, None] | (rank < rule.baseline_min_obs))
    base = _nanmedian(np.where(in_base, obs, np.nan), axis=0)
    drop = base[None] - obs
    for j, i in enumerate(idx):
        finite = drop[j][np.isfinite(drop[j])]
        off = float(np.median(finite)) if rule.scene_relative and finite.size else 0.0
        drop[j] -= off
        info["ndvi_offset"][i] = round(off, 6) if finite.size else None
    value, clear = _window_drop(drop, rule.half_window)
    flag = clear & (np.nan_to_num(value, nan=-np.inf) > rule.threshold)
    state = np.logical_or.accumulate(flag, axis=0)
    last_rule = np.searchsorted(idx, np.arange(n_dates), side="right") - 1
    for t in range(n_dates):
        if last_rule[t] >= 0:
            changed[t] = state[last_rule[t]]
    info["baseline_fraction"] = round(float(np.isfinite(base).mean()), 6)
    return changed, info


def _read_date(image_path: Path, scl_path: Path) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """(image (4, H, W), its profile, unusable (H, W) bool) of one date, with checks."""
    image, prof = read_raster(image_path)
    if image.shape[0] != len(S2_BANDS):
        raise InputError(f"{image_path}: {image.shape[0]} bands, expected {' '.join(S2_BANDS)}")
    names = prof.get("descriptions") or []
    if all(names) and tuple(names) != S2_BANDS:
        raise InputError(f"{image_path}: bands {names}, expected {list(S2_BANDS)}")
    if not np.issubdtype(image.dtype, np.integer):
        raise InputError(f"{image_path}: {image.dtype} bands, expected reflectance x 10000")
    scl, scl_prof = read_raster(scl_path)
    if scl.shape[0] != 1 or not same_grid(prof, scl_prof):
        raise InputError(f"{scl_path}: not one band on the grid of {image_path.name}")
    return image, prof, unusable_mask(scl[0], image)


def import_s2_series(
    folder: str | Path,
    out_dir: str | Path,
    *,
    change: str = "ndvi",
    rule: NdviChangeRule | None = None,
) -> Path:
    """Convert a folder of ``DATE_image.tif`` + ``DATE_scl.tif`` pairs to a time series at
    `out_dir` (atomically: built beside it, renamed into place at the end).

    All dates must share one grid. ``change="ndvi"`` writes the NDVI-drop change mask of
    :class:`NdviChangeRule` (`rule`, its defaults when None) as each date's buildings.tif.
    """
    if change != "ndvi":
        raise InputError(f"change {change!r} is not known (known: 'ndvi')")
    rule = rule or NdviChangeRule()
    found = list_series(folder)
    first_prof: dict[str, Any] | None = None
    series, bad_masks = [], []
    for _, image_path, scl_path in found:
        image, prof, bad = _read_date(image_path, scl_path)
        if first_prof is None:
            first_prof = prof
        elif not same_grid(prof, first_prof):
            raise InputError(f"{image_path}: grid differs from {found[0][1].name}")
        series.append(ndvi(image, bad))
        bad_masks.append(bad)
    assert first_prof is not None
    dates = [d for d, _, _ in found]
    cloud = [round(float(b.mean()), 6) for b in bad_masks]
    changed, info = ndvi_change(np.stack(series), dates, cloud, rule)
    crs, transform = first_prof["crs"], first_prof["transform"]
    kw = {"crs": crs, "transform": transform}
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        frames = []
        for i, (date, image_path, scl_path) in enumerate(found):
            image, _ = read_raster(image_path)
            fdir = tmp / frame_dir_name(i, len(found))
            tags = {"date": date.isoformat(), "source": image_path.name}
            write_raster(fdir / "image.tif", image.astype(np.uint16), nodata=0,
                         descriptions=list(S2_BANDS), tags=tags, **kw)  # fmt: skip
            write_raster(fdir / "buildings.tif", changed[i].astype(np.uint8),
                         descriptions=["change"], **kw)  # fmt: skip
            write_raster(fdir / "clouds.tif", bad_masks[i].astype(np.uint8),
                         descriptions=["clouds"], **kw)  # fmt: skip
            frames.append({
                "cloud_fraction": cloud[i],
                "changed_fraction": round(float(changed[i].mean()), 6),
                "change_evaluated": bool(info["rule_date"][i]),
                "ndvi_offset": info["ndvi_offset"][i],
                "source_image": image_path.name,
                "source_scl": scl_path.name,
            })  # fmt: skip
        doc = times_document(
            source=SOURCE, dates=dates, frames=frames, bands=S2_BANDS,
            reflectance_scale=REFLECTANCE_SCALE, crs=crs.to_string() if crs else None,
            transform=list(transform), width=first_prof["width"], height=first_prof["height"],
            extra={
                "mask_kind": "change",
                "change": change,
                "change_rule": rule.describe(),
                "thresholds": dataclasses.asdict(rule),
                "baseline_fraction": info["baseline_fraction"],
                "date_rule": "the date in the file name (YYYY-MM-DD_image.tif)",
                "cloud_mask": {"layer": "SCL", "unusable_classes": SCL_UNUSABLE,
                               "also": "image nodata (0 in any band)",
                               "source": "ESA Sentinel-2 L2A product specification"},
            },
        )  # fmt: skip
        write_json(tmp / TIMES_FILE, doc)
    return out
