"""Sentinel-2 series import (demgen.data.s2series): SCL cloud masks, NDVI change masks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from demgen.data.s2series import SCL_UNUSABLE, NdviChangeRule, import_s2_series, list_series
from demgen.data.timelayout import read_times
from demgen.errors import InputError
from demgen.io.raster import write_raster

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "romania_s2_timeseries"
CRS = "EPSG:3035"
TRANSFORM = from_origin(5_000_000.0, 2_500_000.0, 10.0, 10.0)
SIZE = 16
BLOCK = (slice(4, 8), slice(6, 10))  # the clear-cut, from date 3 on
CLOUD = (slice(0, 6), slice(4, 12))  # SCL 9 at date 4, over the block's top half
# Forest NDVI per date: summer swing 0.78-0.88 and a winter date (0.35) the season skips.
DATES = ["2019-06-10", "2019-08-20", "2020-01-15", "2020-06-10", "2020-07-20", "2020-09-10"]
FOREST = [0.82, 0.88, 0.35, 0.80, 0.86, 0.78]
CUT = 0.35  # NDVI of the cut block from date 3 (bare soil, then some regrowth)


def _image(ndvi: np.ndarray) -> np.ndarray:
    """uint16 (B2, B3, B4, B8) x 10000 with the given NDVI (red fixed at 0.04)."""
    red = np.full(ndvi.shape, 400.0)
    nir = red * (1 + ndvi) / (1 - ndvi)
    return np.stack([red * 0.8, red * 1.5, red, nir]).round().astype(np.uint16)


def _write_series(folder: Path) -> dict[str, np.ndarray]:
    """The synthetic folder of the module doc: returns the expected cloud masks per date."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for t, (date, level) in enumerate(zip(DATES, FOREST, strict=True)):
        nd = level + rng.uniform(-0.02, 0.02, (SIZE, SIZE))
        if t >= 3:
            nd[BLOCK] = CUT + 0.05 * (t - 3) + rng.uniform(-0.02, 0.02, (4, 4))
        image = _image(nd)
        scl = np.full((SIZE, SIZE), 4, np.uint8)  # vegetation
        scl[15, :4] = [2, 5, 6, 7]  # usable classes
        if t == 2:
            scl[12:14, 0:3] = [[3, 11, 10], [8, 1, 0]]  # shadow, snow, cirrus, ...
        if t == 4:
            scl[CLOUD] = 9
        if t == 5:
            image[0, 14, 14] = 0  # image nodata in one band
        expected[date] = np.isin(scl, list(SCL_UNUSABLE)) | (image == 0).any(axis=0)
        kw = {"crs": CRS, "transform": TRANSFORM}
        write_raster(folder / f"{date}_image.tif", image, nodata=0,
                     descriptions=["B2", "B3", "B4", "B8"], **kw)  # fmt: skip
        write_raster(folder / f"{date}_scl.tif", scl, descriptions=["SCL"], **kw)
    return expected


def _band(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_synthetic_series_change_clouds_and_times(tmp_path: Path) -> None:
    expected = _write_series(tmp_path / "in")
    out = import_s2_series(tmp_path / "in", tmp_path / "out" / "place")
    doc = read_times(out)
    assert doc["dates"] == DATES and doc["n_dates"] == 6
    assert doc["source"] == "sentinel-2 L2A series" and doc["mask_kind"] == "change"
    assert doc["bands"] == ["B2", "B3", "B4", "B8"] and doc["reflectance_scale"] == 1e-4
    assert doc["crs"] == CRS and doc["transform"] == list(TRANSFORM)[:6]
    assert doc["thresholds"]["threshold"] == 0.2 and "NDVI" in doc["change_rule"]
    block = np.zeros((SIZE, SIZE), bool)
    block[BLOCK] = True
    for t, fr in enumerate(doc["frames"]):
        clouds = _band(out / fr["dir"] / "clouds.tif")
        np.testing.assert_array_equal(clouds, expected[fr["date"]].astype(np.uint8))
        assert fr["cloud_fraction"] == pytest.approx(expected[fr["date"]].mean(), abs=1e-6)
        change = _band(out / fr["dir"] / "buildings.tif")
        # 0 before date 3 (also at the winter date), the block from date 3 on, also under
        # date 4's cloud (carried), nothing else despite the seasonal swing
        np.testing.assert_array_equal(change, (block & (t >= 3)).astype(np.uint8))
    assert [fr["change_evaluated"] for fr in doc["frames"]] == [1, 1, 0, 1, 1, 1]
    with rasterio.open(out / "t00" / "image.tif") as ds:
        assert ds.descriptions == ("B2", "B3", "B4", "B8") and ds.nodata == 0
    again = import_s2_series(tmp_path / "in", tmp_path / "again")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(files) == 1 + 6 * 3
    for rel in files:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_change_rule_without_season_is_fooled_by_winter(tmp_path: Path) -> None:
    """Without the season window the winter NDVI dip confirms the cut a date too early."""
    _write_series(tmp_path / "in")
    out = import_s2_series(tmp_path / "in", tmp_path / "o", rule=NdviChangeRule(season=None,
                           scene_relative=False))  # fmt: skip
    doc = read_times(out)
    assert doc["thresholds"]["season"] is None
    assert _band(out / "t02" / "buildings.tif")[BLOCK].all()  # 2020-01, before the cut


def test_bad_folders_stop_with_one_line(tmp_path: Path) -> None:
    _write_series(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    assert len(list_series(tmp_path / "in")) == 6
    cases = {}
    for name in ("bad_name", "no_scl", "bad_date", "grid"):
        src = tmp_path / name
        src.mkdir()
        for p in sorted((tmp_path / "in").glob("2019-*.tif")):
            (src / p.name).write_bytes(p.read_bytes())
        cases[name] = src
    (cases["bad_name"] / "scene.tif").write_bytes(b"")
    (cases["no_scl"] / "2019-06-10_scl.tif").unlink()
    (cases["bad_date"] / "2019-06-10_scl.tif").rename(cases["bad_date"] / "2019-13-10_scl.tif")
    moved = from_origin(5_000_010.0, 2_500_000.0, 10.0, 10.0)
    for kind in ("image", "scl"):
        arr = _band(cases["grid"] / f"2019-08-20_{kind}.tif")[None].repeat(
            4 if kind == "image" else 1, axis=0
        )  # fmt: skip
        names = ["B2", "B3", "B4", "B8"] if kind == "image" else None
        write_raster(cases["grid"] / f"2019-08-20_{kind}.tif", arr, crs=CRS, transform=moved,
                     descriptions=names)  # fmt: skip
    messages = {
        "bad_name": "not a DATE_image.tif",
        "no_scl": "no such file",
        "bad_date": "not an ISO date",
        "grid": "grid differs",
    }
    for name, text in messages.items():
        with pytest.raises(InputError, match=text) as err:
            import_s2_series(cases[name], tmp_path / "out" / name)
        assert "\n" not in str(err.value)
        assert not (tmp_path / "out" / name).exists()


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realdata is not here")
def test_romania_series(tmp_path: Path) -> None:
    out = import_s2_series(REAL, tmp_path / "romania")
    doc = read_times(out)
    assert doc["n_dates"] == 140 and doc["dates"][0] == "2015-08-01"
    assert dt.date.fromisoformat(doc["dates"][-1]) == dt.date(2021, 1, 1)
    assert all(0.0 <= c <= 1.0 for c in doc["cloud_fraction"])
    end = _band(out / doc["frames"][-1]["dir"] / "buildings.tif").mean()
    clear = sum(c <= 0.5 for c in doc["cloud_fraction"])
    print(f"romania: changed at the end {end:.1%}, dates <= 50 % cloud {clear}/140, "
          f"rule dates {sum(f['change_evaluated'] for f in doc['frames'])}")  # fmt: skip
    assert 0.01 < end < 0.9
    assert doc["frames"][-1]["changed_fraction"] == pytest.approx(end, abs=1e-6)
