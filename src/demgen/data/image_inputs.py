"""Image scenes: group image files into scenes and name their bands; read a DEM's z unit.

An image scene is one multi-band raster, one file per band such as Landsat's ``*_B1.TIF``
... ``*_B7.TIF``, or several of either (:func:`image_scenes`); :mod:`demgen.data.align`
puts a scene and its DEMs on one grid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rasterio.errors import RasterioError
from rasterio.windows import Window

from demgen.errors import InputError
from demgen.io.raster import band_names, open_raster, require_crs

FEET_TO_METRES = 0.3048  # international foot; the US survey foot differs by 2 ppm
_BAND_SUFFIX = re.compile(r"^(?P<stem>.+?)[_-](?P<band>B\d+[A-Z]?)$", re.IGNORECASE)
_FEET_WORDS = ("ft", "foot", "feet", "us survey foot", "us_survey_foot", "ftus", "us-ft")

__all__ = [
    "FEET_TO_METRES",
    "BandRef",
    "ImageScene",
    "detect_z_unit",
    "image_scenes",
    "open_checked",
]


@dataclass
class BandRef:
    """One band of an image scene: file, 1-based index and name."""

    path: Path
    index: int
    name: str


@dataclass
class ImageScene:
    """The bands of one image scene (possibly spread over several files)."""

    name: str
    bands: list[BandRef] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return list(dict.fromkeys(b.path for b in self.bands))


def image_scenes(
    paths: Sequence[str | Path], bands: Sequence[str] | None = None
) -> list[ImageScene]:
    """Group image files into scenes and select bands by 1-based index or by name.

    Single-band files whose names end in ``_B<n>`` and share a stem form one scene (band named
    by that suffix, ordered by band number: B2 before B10); every other file is a scene of
    its own (bands named by their descriptions, else ``band<i>``, in the file's order).
    ``bands`` entries are names (matched case-insensitively to descriptions or suffixes) or
    1-based indices in that order.
    """
    groups: dict[str, ImageScene] = {}
    per_band: set[str] = set()
    for p in map(Path, paths):
        with open_raster(p) as ds:
            require_crs(ds, p)
            m = _BAND_SUFFIX.match(p.stem)
            if ds.count == 1 and m:
                key = m["stem"]
                per_band.add(key)
                scene = groups.setdefault(key, ImageScene(key))
                scene.bands.append(BandRef(p, 1, ds.descriptions[0] or m["band"].upper()))
            else:
                groups[str(p)] = ImageScene(
                    p.stem, [BandRef(p, i + 1, n) for i, n in enumerate(band_names(ds))]
                )
    scenes = list(groups.values())
    for key, s in groups.items():
        if key in per_band:
            s.bands.sort(key=lambda b: _band_sort_key(b.name))
        if bands:
            s.bands = [_select(s, b) for b in bands]
    names = [[b.name for b in s.bands] for s in scenes]
    if any(n != names[0] for n in names):
        other = next(n for n in names if n != names[0])
        raise InputError(
            f"image scenes have different bands ({names[0]} vs {other}); "
            "choose common ones with --bands"
        )
    return scenes


def _band_sort_key(name: str) -> tuple[int, str]:
    m = re.fullmatch(r"B(\d+)([A-Z]?)", name, re.IGNORECASE)
    return (int(m[1]), m[2].upper()) if m else (10**6, name)


def _select(scene: ImageScene, wanted: str) -> BandRef:
    w = wanted.strip()
    for b in scene.bands:
        if b.name.lower() == w.lower():
            return b
    if w.isdigit() and 1 <= int(w) <= len(scene.bands):
        return scene.bands[int(w) - 1]
    have = ", ".join(b.name for b in scene.bands)
    raise InputError(f"{scene.files[0]}: band {w!r} does not exist (bands: {have})")


def detect_z_unit(path: str | Path) -> str | None:
    """'ft' when the DEM's band unit or vertical CRS says feet, 'm' when metres, else None."""
    with open_raster(path) as ds:
        unit = (ds.units[0] or "").strip().lower() if ds.units else ""
        wkt = ds.crs.to_wkt().lower() if ds.crs is not None else ""
    if unit in _FEET_WORDS or "foot" in unit or "feet" in unit:
        return "ft"
    if "vert" in wkt and ("foot" in wkt or "feet" in wkt):
        return "ft"
    if unit in ("m", "metre", "meter", "metres", "meters"):
        return "m"
    return None


def open_checked(path: str | Path) -> None:
    """Open a raster and read its first block, raising InputError naming the file if broken."""
    with open_raster(path) as ds:
        require_crs(ds, path)
        try:
            ds.read(1, window=Window(0, 0, min(ds.width, 256), min(ds.height, 256)))
        except RasterioError as exc:
            raise InputError(f"{path}: read failed ({str(exc).strip().splitlines()[0]})") from exc
