"""Synthetic time series: layout, determinism, urban growth, phenology, snow and clouds."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from demgen.cli import main
from demgen.data.synth import SceneConfig
from demgen.data.synth.growth import BLOCK_M
from demgen.data.synth.render import SPECTRA
from demgen.data.synth.seasons import (
    DRY_GRASS,
    NDVI_RANGE,
    greenness,
    ndvi,
    seasonal_surface,
    snow_line,
    sun_elevation,
)
from demgen.data.synth.terrain import CROP, FOREST, GRASS, SNOW, URBAN
from demgen.data.synth.timeseries import (
    TS_FRAME_FILES,
    TS_SCENE_FILES,
    TimeSeriesConfig,
    generate_time_series,
)
from demgen.data.synth.world import resolve_config
from demgen.data.timelayout import add_months, read_times
from demgen.errors import InputError

DATES = ["2020-01-15", "2020-05-15", "2020-09-15", "2021-01-15"]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def _frames(scene: Path, name: str) -> list[np.ndarray]:
    doc = read_times(scene)
    return [_read(scene / fr["dir"] / name) for fr in doc["frames"]]


def _ndvi(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float64)
    return (x[3] - x[2]) / (x[3] + x[2])


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 px plains scene with a town and roads; 4 dates 4 months apart, fast growth."""
    ts = TimeSeriesConfig(times=4, months_between=4, cloud_cover=0.3, urban_rate=0.3,
                          road_rate=0.05)  # fmt: skip
    out = tmp_path_factory.mktemp("ts") / "scene"
    return generate_time_series(out, SceneConfig(size=128, seed=13, relief="plains"), ts)


def test_layout_and_times_json(town: Path) -> None:
    assert sorted(p.name for p in town.iterdir()) == sorted(
        list(TS_SCENE_FILES) + ["t00", "t01", "t02", "t03"]
    )
    # strict JSON: no NaN / Infinity tokens
    doc = json.loads((town / "times.json").read_text(), parse_constant=pytest.fail)
    assert doc["source"] == "synthetic" and doc["seed"] == 13
    assert doc["dates"] == DATES
    assert doc["day_gaps"] == [0, 121, 123, 122]
    assert doc["days_since_first"] == [0, 121, 244, 366]
    assert doc["parameters"]["months_between"] == 4 and doc["scene_config"]["size"] == 128
    assert doc["bands"] == ["B2", "B3", "B4", "B8"] and doc["reflectance_scale"] == 10000
    grid = None
    for fr in doc["frames"]:
        assert sorted(p.name for p in (town / fr["dir"]).iterdir()) == sorted(TS_FRAME_FILES)
        with rasterio.open(town / fr["dir"] / "image.tif") as ds:
            assert ds.count == 4 and ds.dtypes[0] == "uint16"
            assert ds.descriptions == ("B2", "B3", "B4", "B8")
            assert ds.tags()["date"] == fr["date"]
            g = (ds.crs, ds.transform, ds.shape)
        grid = grid or g
        assert g == grid
        with rasterio.open(town / fr["dir"] / "buildings.tif") as ds:
            assert ds.dtypes[0] == "uint8" and (ds.crs, ds.transform, ds.shape) == grid
            assert set(np.unique(ds.read())) <= {0, 1}
        clouds = _read(town / fr["dir"] / "clouds.tif")
        assert fr["cloud_fraction"] == pytest.approx(float(clouds.mean()), abs=1e-6)
    assert doc["frames"][0]["cloud_fraction"] == 0.0  # the day-0 image is clear


def test_same_seed_byte_identical(tmp_path: Path) -> None:
    ts = TimeSeriesConfig(times=3, months_between=2, cloud_cover=0.5)
    cfg = SceneConfig(size=64, seed=5, relief="plains", erosion_iterations=5)
    a = generate_time_series(tmp_path / "a", cfg, ts)
    b = generate_time_series(tmp_path / "b", cfg, ts)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == len(TS_SCENE_FILES) + 3 * len(TS_FRAME_FILES)
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = generate_time_series(tmp_path / "c", SceneConfig(size=64, seed=6, relief="plains",
                                                         erosion_iterations=5), ts)  # fmt: skip
    assert (a / "t01" / "image.tif").read_bytes() != (c / "t01" / "image.tif").read_bytes()


def test_tiled_equals_untiled(tmp_path: Path) -> None:
    ts = TimeSeriesConfig(times=2, months_between=6, cloud_cover=0.4, urban_rate=0.5)
    base = dict(size=80, seed=13, relief="plains", erosion_iterations=5)
    whole = generate_time_series(tmp_path / "w", SceneConfig(**base, tile=128), ts)
    tiled = generate_time_series(tmp_path / "t", SceneConfig(**base, tile=24), ts)
    for rel in sorted(p.relative_to(whole) for p in whole.rglob("*.tif")):
        assert np.array_equal(_read(whole / rel), _read(tiled / rel)), rel


def test_buildings_only_accumulate_and_grow(town: Path) -> None:
    masks = [m[0].astype(bool) for m in _frames(town, "buildings.tif")]
    for before, after in zip(masks, masks[1:], strict=False):
        assert not (before & ~after).any()  # a building at t is still there at t+1
    assert masks[-1].sum() > masks[0].sum() + 200  # the town grew
    doc = read_times(town)
    assert [fr["building_pixels"] for fr in doc["frames"]] == [int(m.sum()) for m in masks]


def test_new_buildings_next_to_previous_urban_or_roads(town: Path) -> None:
    masks = [m[0].astype(bool) for m in _frames(town, "buildings.tif")]
    lcs = [m[0] for m in _frames(town, "landcover.tif")]
    dsms = [m[0] for m in _frames(town, "dsm.tif")]
    dtm = _read(town / "dtm.tif")[0]
    # a new block borders a block of the previous date (or a road): at most two blocks away
    n_px = math.ceil(2 * BLOCK_M / 10.0)
    for t in range(1, len(masks)):
        new = masks[t] & ~masks[t - 1]
        ny, nx = np.nonzero(new)
        uy, ux = np.nonzero(lcs[t - 1] == URBAN)
        assert uy.size > 0
        if ny.size == 0:
            continue
        d2 = (ny[:, None] - uy[None, :]) ** 2 + (nx[:, None] - ux[None, :]) ** 2
        assert float(np.sqrt(d2.min(axis=1)).max()) <= n_px, t
        # houses stand 4-12 m over the (cleared) ground and are urban land cover
        assert (dsms[t][new] - dtm[new]).min() >= 4.0 - 1e-3
        assert (lcs[t][new] == URBAN).all()
    # the scene has plenty of land further away than that, so the bound is a real constraint
    uy, ux = np.nonzero(lcs[0] == URBAN)
    gy, gx = np.mgrid[0:128:4, 0:128:4]
    d = np.sqrt(((gy.ravel()[:, None] - uy) ** 2 + (gx.ravel()[:, None] - ux) ** 2).min(axis=1))
    assert (d > n_px).mean() > 0.1


def test_clouds_differ_per_date(town: Path) -> None:
    clouds = [m[0] for m in _frames(town, "clouds.tif")]
    assert clouds[0].sum() == 0
    cloudy = [c for c in clouds if 0 < c.mean() < 1]
    assert len(cloudy) >= 1
    pairs = [(a, b) for i, a in enumerate(clouds) for b in clouds[i + 1 :]]
    assert sum(not np.array_equal(a, b) for a, b in pairs) >= len(pairs) - 1


def test_phenology_amplitude_stated_and_rendered(tmp_path: Path) -> None:
    # stated surface NDVI ranges (winter -> summer)
    lo, hi = NDVI_RANGE["grass"]
    assert lo == pytest.approx(0.41, abs=0.01) and hi == pytest.approx(0.75, abs=0.01)
    assert NDVI_RANGE["forest"][1] - NDVI_RANGE["forest"][0] == pytest.approx(0.26, abs=0.01)
    assert NDVI_RANGE["crop"][1] - NDVI_RANGE["crop"][0] > 0.6
    # the surface model reaches those ends at the trough and peak of the season
    lc = np.full((4, 4), GRASS, np.uint8)
    xm = np.arange(4.0)[None, :] * 10
    ym = np.arange(4.0)[:, None] * -10 + 5e6
    for doy, want in ((20, lo), (203, hi)):
        refl = np.zeros((4, 4, 4), np.float32)
        s = seasonal_surface(refl, lc, xm, ym, 0, doy)
        assert ndvi(s[0, 0]) == pytest.approx(want, abs=0.005)
    # rendered, clear images in January and July: vegetation NDVI follows the season
    ts = TimeSeriesConfig(times=2, months_between=6, cloud_cover=0.0)
    # the scene's own climate, with the snow line far above it: this test is about
    # phenology, and a winter snow line 1800 m lower would bury the plains in January
    cfg = resolve_config(SceneConfig(size=64, seed=3, relief="plains", erosion_iterations=5))
    cfg = replace(cfg, climate={**cfg.climate, "snow_line_m": 5000.0})
    scene = generate_time_series(tmp_path / "s", cfg, ts)
    jan, jul = _frames(scene, "image.tif")
    lc0, lc1 = (m[0] for m in _frames(scene, "landcover.tif"))
    for cls in (GRASS, FOREST):
        veg = (lc0 == cls) & (lc1 == cls)
        assert veg.sum() > 50, cls
        d = float(_ndvi(jul)[veg].mean() - _ndvi(jan)[veg].mean())
        if cls == GRASS:  # surface amplitude 0.34; haze and sky light damp it a little
            g0, g1 = greenness(15), greenness(197)
            grass = np.asarray(SPECTRA[GRASS], np.float32)
            want = ndvi(DRY_GRASS + (grass - DRY_GRASS) * g1) - ndvi(
                DRY_GRASS + (grass - DRY_GRASS) * g0
            )
            assert 0.6 * want < d < 1.2 * want, (d, want)
        else:
            assert d > 0.05, d
    crop = (lc0 == CROP) & (lc1 == CROP)
    assert crop.sum() > 0 and np.abs(_ndvi(jul)[crop] - _ndvi(jan)[crop]).mean() > 0.1


def test_seasonal_snow_and_sun(tmp_path: Path) -> None:
    assert snow_line(2800.0, 20) == pytest.approx(1000.0, abs=1)
    assert snow_line(2800.0, 203) == pytest.approx(2800.0, abs=1)
    assert sun_elevation(40.0, 172) == pytest.approx(63.4, abs=0.1)
    assert sun_elevation(40.0, 355) == pytest.approx(16.6, abs=0.1)
    ts = TimeSeriesConfig(times=2, months_between=6, cloud_cover=0.0)
    scene = generate_time_series(tmp_path / "a", SceneConfig(size=64, seed=4, relief="alpine",
                                                             erosion_iterations=5), ts)  # fmt: skip
    jan, jul = (m[0] for m in _frames(scene, "landcover.tif"))
    assert (jan == SNOW).sum() > (jul == SNOW).sum() + 200
    assert not ((jul == SNOW) & (jan != SNOW)).any()  # summer snow lies where winter snow does


def test_dates_and_errors(tmp_path: Path) -> None:
    import datetime as dt

    assert add_months(dt.date(2020, 1, 31), 1) == dt.date(2020, 2, 29)
    assert add_months(dt.date(2020, 11, 15), 3) == dt.date(2021, 2, 15)
    cfg = SceneConfig(size=64)
    for bad in (
        TimeSeriesConfig(times=0),
        TimeSeriesConfig(months_between=0),
        TimeSeriesConfig(start="2020-13-01"),
        TimeSeriesConfig(cloud_cover=1.5),
    ):
        with pytest.raises(InputError):
            generate_time_series(tmp_path / "x", cfg, bad)
    with pytest.raises(InputError, match="stereo"):
        generate_time_series(tmp_path / "x", SceneConfig(size=64, stereo=True), TimeSeriesConfig())
    assert not (tmp_path / "x").exists()


def test_cli_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w"
    argv = ["synth", str(out), "--size", "64", "--times", "3", "--months-between", "2", "-q"]
    assert main(argv + ["--clouds", "0.4"]) == 0
    doc = read_times(out / "scene_000")
    assert doc["dates"] == ["2020-01-15", "2020-03-15", "2020-05-15"]
    assert doc["parameters"]["cloud_cover"] == 0.4
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
