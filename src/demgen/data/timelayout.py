"""On-disk layout shared by every time series demgen writes (synthetic or imported).

One folder per place::

    PLACE/times.json        dates, day gaps, per-date cloud fraction, source and parameters
    PLACE/t00/image.tif     the image of the first date
    PLACE/t00/buildings.tif uint8 0/1 building mask of that date
    PLACE/t00/clouds.tif    uint8 0/1 mask of unusable pixels (clouds, or masked mosaic areas)
    PLACE/t01/...

The synthetic generator (:mod:`demgen.data.synth.timeseries`) and the SpaceNet 7 importer
(:mod:`demgen.data.spacenet7`) both write it, so the later pipeline reads one format.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demgen.errors import InputError

TIMES_FORMAT = "demgen-timeseries/1"
TIMES_FILE = "times.json"
FRAME_FILES: tuple[str, ...] = ("image.tif", "buildings.tif", "clouds.tif")


def frame_dir_name(index: int, n_frames: int) -> str:
    """Folder name of date `index` of `n_frames` (t00, t01, ...; zero-padded so names sort)."""
    width = max(2, len(str(max(0, n_frames - 1))))
    return f"t{index:0{width}d}"


def add_months(date: dt.date, months: int) -> dt.date:
    """`date` shifted by whole calendar months, the day clamped to the target month's length."""
    m = date.month - 1 + months
    year, month = date.year + m // 12, m % 12 + 1
    day = min(date.day, calendar.monthrange(year, month)[1])
    return dt.date(year, month, day)


def parse_date(text: str) -> dt.date:
    """An ISO date (YYYY-MM-DD); InputError (one line) otherwise."""
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError as exc:
        raise InputError(f"not an ISO date (YYYY-MM-DD): {text!r}") from exc


def day_gaps(dates: Sequence[dt.date]) -> tuple[list[int], list[int]]:
    """(days since the previous date, 0 first; days since the first date) of sorted dates."""
    if any(b <= a for a, b in zip(dates, dates[1:], strict=False)):
        raise InputError("dates of a time series must be strictly increasing")
    gaps = [0] + [(b - a).days for a, b in zip(dates, dates[1:], strict=False)]
    since = [(d - dates[0]).days for d in dates]
    return gaps, since


def times_document(
    *,
    source: str,
    dates: Sequence[dt.date],
    frames: Sequence[dict[str, Any]],
    bands: Sequence[str],
    reflectance_scale: float | None,
    crs: str | None,
    transform: Sequence[float],
    width: int,
    height: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The times.json content: the dates and per-frame facts every reader can rely on.

    Each frame dict must hold at least ``cloud_fraction``; ``dir``, ``date``, ``day_of_year``,
    ``day_gap`` and ``days_since_first`` are filled in here.
    """
    gaps, since = day_gaps(list(dates))
    out_frames = []
    for i, (d, fr) in enumerate(zip(dates, frames, strict=True)):
        base = {
            "dir": frame_dir_name(i, len(dates)),
            "date": d.isoformat(),
            "day_of_year": d.timetuple().tm_yday,
            "day_gap": gaps[i],
            "days_since_first": since[i],
        }
        out_frames.append({**base, **fr})
    doc: dict[str, Any] = {
        "format": TIMES_FORMAT,
        "source": source,
        "n_dates": len(dates),
        "dates": [d.isoformat() for d in dates],
        "day_gaps": gaps,
        "days_since_first": since,
        "cloud_fraction": [fr["cloud_fraction"] for fr in frames],
        "frames": out_frames,
        "frame_files": list(FRAME_FILES),
        "bands": list(bands),
        "reflectance_scale": reflectance_scale,
        "crs": crs,
        "transform": [float(v) for v in list(transform)[:6]],
        "width": int(width),
        "height": int(height),
    }
    doc.update(extra or {})
    return doc


def reflectance_multiplier(doc: dict[str, Any]) -> float | None:
    """Stored value -> reflectance factor of a times.json, or None when it records none.

    Writers record ``reflectance_scale`` either as the divisor (the synthetic series:
    10000, stored = reflectance x 10000) or as the multiplier (a Sentinel-2 series: 1e-4);
    no stored unit is smaller than its reflectance, so a value above 1 is the divisor."""
    v = doc.get("reflectance_scale")
    if not v:
        return None
    v = float(v)
    return 1.0 / v if v > 1.0 else v


def read_times(place: str | Path) -> dict[str, Any]:
    """Read and check PLACE/times.json (format tag, one frame folder per date)."""
    path = Path(place) / TIMES_FILE
    if not path.exists():
        raise InputError(f"{path}: no such file (not a demgen time series folder)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg})") from exc
    if not isinstance(doc, dict) or doc.get("format") != TIMES_FORMAT:
        raise InputError(f"{path}: format is not {TIMES_FORMAT}")
    frames = doc.get("frames")
    if not isinstance(frames, list) or len(frames) != len(doc.get("dates", [])):
        raise InputError(f"{path}: frames and dates disagree")
    for fr in frames:
        if not (Path(place) / str(fr.get("dir"))).is_dir():
            raise InputError(f"{path}: frame folder {fr.get('dir')!r} is missing")
    return doc
