"""Synthetic-world generator: determinism, seamless tiling, physics, georeferencing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from demgen.data.synth import (
    BANDS,
    RELIEFS,
    SCENE_FILES,
    SceneConfig,
    generate_scene,
    generate_world,
)
from demgen.data.synth.render import cloud_cover_field
from demgen.data.synth.terrain import FOREST, GRASS, SNOW, URBAN, WATER
from demgen.errors import InputError

RASTERS = ("dtm.tif", "dsm.tif", "image.tif", "landcover.tif", "clouds.tif")


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture(scope="module")
def hills(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hills") / "scene"
    return generate_scene(out, SceneConfig(size=128, seed=11, relief="hills", cloud_cover=0.2))


def test_scene_files_and_metadata(hills: Path) -> None:
    assert sorted(p.name for p in hills.iterdir()) == sorted(SCENE_FILES)
    meta = json.loads((hills / "scene.json").read_text())
    assert meta["seed"] == 11
    assert meta["bands"] == list(BANDS) == ["B2", "B3", "B4", "B8"]
    assert meta["config"]["relief"] == "hills"
    assert set(meta["classes"].values()) >= {"water", "snow", "urban", "forest"}
    with rasterio.open(hills / "image.tif") as ds:
        assert ds.count == 4 and ds.dtypes[0] == "uint16"
        assert ds.descriptions == ("B2", "B3", "B4", "B8")
        assert ds.nodata is None
        img = ds.read()
    assert img.min() >= 1
    with rasterio.open(hills / "dtm.tif") as ds:
        assert ds.descriptions == ("dtm",) and ds.units == ("metre",)
        assert ds.dtypes[0] == "float32"
    with rasterio.open(hills / "landcover.tif") as ds:
        assert ds.dtypes[0] == "uint8"
        assert json.loads(ds.tags()["classes"])["1"] == "water"
        lc = ds.read(1)
    assert lc.min() >= 1 and lc.max() <= 8
    clouds = _read(hills / "clouds.tif")
    assert set(np.unique(clouds)) <= {0, 1}
    assert clouds.any()


@pytest.mark.parametrize("cover", [0.1, 0.4, 0.8])
def test_cloud_cover_fraction_is_calibrated(cover: float) -> None:
    # clouds are kilometres wide, so check the fraction over a wide (coarsely sampled) area
    x = (np.arange(600) * 200.0 + 4e5)[None, :]
    y = (5e6 - np.arange(600) * 200.0)[:, None]
    field = cloud_cover_field(x, y, 21, cover)
    assert field is not None
    assert abs((field > 0.5).mean() - cover) < 0.05
    assert cloud_cover_field(x, y, 21, 0.0) is None


def test_georeferencing_identical_and_projected(hills: Path) -> None:
    meta = json.loads((hills / "scene.json").read_text())
    ref = None
    for name in RASTERS:
        with rasterio.open(hills / name) as ds:
            assert ds.crs is not None and ds.crs.is_projected
            assert ds.crs.to_epsg() == 32633
            assert ds.res == (10.0, 10.0)
            assert ds.width == ds.height == 128
            grid = (ds.crs, ds.transform, ds.width, ds.height)
        ref = ref or grid
        assert grid == ref
    assert list(ref[1])[:6] == pytest.approx(meta["transform"])


def test_same_seed_identical_different_seed_differs(tmp_path: Path, hills: Path) -> None:
    cfg = SceneConfig(size=128, seed=11, relief="hills", cloud_cover=0.2)
    again = generate_scene(tmp_path / "again", cfg)
    for name in RASTERS:
        assert np.array_equal(_read(hills / name), _read(again / name)), name
    other = generate_scene(tmp_path / "other", SceneConfig(size=128, seed=12, relief="hills"))
    for name in ("dtm.tif", "dsm.tif", "image.tif"):
        assert not np.array_equal(_read(hills / name), _read(other / name)), name


@pytest.mark.parametrize("relief", ["hills", "alpine"])
def test_tiled_equals_untiled(tmp_path: Path, relief: str) -> None:
    base = dict(size=80, seed=3, relief=relief, erosion_iterations=5, cloud_cover=0.3)
    whole = generate_scene(tmp_path / "whole", SceneConfig(**base, tile=128))
    tiled = generate_scene(tmp_path / "tiled", SceneConfig(**base, tile=24))
    for name in RASTERS:
        assert np.array_equal(_read(whole / name), _read(tiled / name)), name


def test_water_only_at_or_below_sea_level(tmp_path: Path) -> None:
    # plains around sea level give plenty of both water and land
    found_water = False
    for seed in range(4):
        p = generate_scene(tmp_path / f"s{seed}", SceneConfig(size=96, seed=seed, relief="plains",
                                                              sea_level=40.0))  # fmt: skip
        lc = _read(p / "landcover.tif")[0]
        dtm = _read(p / "dtm.tif")[0]
        water = lc == WATER
        assert np.all(dtm[water] <= 40.0 + 1e-3)
        assert np.all(dtm[~water] > 40.0)  # no land below the water surface
        found_water |= bool(water.any()) and bool((~water).any())
    assert found_water


def test_dsm_above_dtm_on_objects(hills: Path, tmp_path: Path) -> None:
    p = generate_scene(tmp_path / "plains", SceneConfig(size=192, seed=1, relief="plains"))
    for scene in (hills, p):
        dtm = _read(scene / "dtm.tif")[0]
        dsm = _read(scene / "dsm.tif")[0]
        lc = _read(scene / "landcover.tif")[0]
        assert np.all(dsm >= dtm)
        forest = lc == FOREST
        # canopies are 8 m and more, shrinking to 0.45 x that just below the tree line
        assert np.all(dsm[forest] - dtm[forest] >= 0.45 * 8.0 - 1e-3)
        urban = lc == URBAN
        if urban.any():
            # buildings fill the blocks; streets are at ground level
            assert np.mean(dsm[urban] - dtm[urban] >= 6.0 - 1e-3) > 0.3
    lc = _read(p / "landcover.tif")[0]
    assert (lc == URBAN).any() or (lc == FOREST).any()


def test_slopes_facing_away_from_sun_are_darker(tmp_path: Path) -> None:
    az = 150.0
    p = generate_scene(tmp_path / "a", SceneConfig(size=192, seed=2, relief="alpine",
                                                   sun_azimuth=az, haze=0.0))  # fmt: skip
    dtm = _read(p / "dtm.tif")[0].astype(np.float64)
    lc = _read(p / "landcover.tif")[0]
    nir = _read(p / "image.tif")[3].astype(np.float64)
    dzdn, dzde = np.gradient(dtm, 10.0)  # axis 0 grows southwards
    dzdn = -dzdn
    slope = np.hypot(dzde, dzdn)
    # downslope direction as a unit vector (east, north) vs the sun's horizontal direction
    sun = np.array([np.sin(np.radians(az)), np.cos(np.radians(az))])
    facing = -(dzde * sun[0] + dzdn * sun[1]) / np.maximum(slope, 1e-9)
    compared = 0
    for cls in (GRASS, FOREST, 6):
        sel = (lc == cls) & (slope > 0.15)
        toward, away = sel & (facing > 0.5), sel & (facing < -0.5)
        if toward.sum() > 30 and away.sum() > 30:
            assert nir[away].mean() < 0.85 * nir[toward].mean(), cls
            compared += 1
    assert compared >= 1


def test_erosion_lowers_peaks_and_fills_valleys(tmp_path: Path) -> None:
    base = dict(size=128, seed=4, relief="alpine", sea_level=-1e4)
    raw = _read(generate_scene(tmp_path / "raw", SceneConfig(**base, erosion_iterations=0))
                / "dtm.tif")[0].astype(np.float64)  # fmt: skip
    ero = _read(generate_scene(tmp_path / "ero", SceneConfig(**base, erosion_iterations=30))
                / "dtm.tif")[0].astype(np.float64)  # fmt: skip
    assert ero.max() < raw.max()
    assert np.percentile(ero, 99.5) < np.percentile(raw, 99.5)

    def local_minima(a: np.ndarray) -> np.ndarray:
        c = a[1:-1, 1:-1]
        nb = [a[:-2, 1:-1], a[2:, 1:-1], a[1:-1, :-2], a[1:-1, 2:]]
        return np.all([c <= n for n in nb], axis=0)

    # valley floors (the raw terrain's local minima) get filled with sediment
    pits = local_minima(raw)
    assert pits.sum() > 5
    assert np.mean(ero[1:-1, 1:-1][pits] - raw[1:-1, 1:-1][pits]) > 0
    # mass is (roughly) conserved: the mean changes far less than the relief
    assert abs(ero.mean() - raw.mean()) < 0.01 * (raw.max() - raw.min())

    # and the surface gets smoother (less total curvature)
    def rough(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, 2, axis=0)).mean() + np.abs(np.diff(a, 2, axis=1)).mean())

    assert rough(ero) < rough(raw)


def test_haze_brightens_low_terrain(tmp_path: Path) -> None:
    cfg = dict(size=64, seed=7, relief="alpine")
    clear = _read(generate_scene(tmp_path / "c", SceneConfig(**cfg, haze=0.0)) / "image.tif")
    hazy = _read(generate_scene(tmp_path / "h", SceneConfig(**cfg, haze=0.5)) / "image.tif")
    dtm = _read(tmp_path / "h" / "dtm.tif")[0]
    diff = hazy[0].astype(np.float64) - clear[0]  # blue band: path radiance strongest
    low, high = dtm <= np.percentile(dtm, 20), dtm >= np.percentile(dtm, 80)
    assert diff[low].mean() > diff[high].mean() > 0


def test_world_distinct_scenes(tmp_path: Path) -> None:
    paths = generate_world(tmp_path / "w", 2, SceneConfig(size=48, seed=5, relief="plains",
                                                          erosion_iterations=4))  # fmt: skip
    assert [p.name for p in paths] == ["scene_000", "scene_001"]
    metas = [json.loads((p / "scene.json").read_text()) for p in paths]
    assert [m["seed"] for m in metas] == [5, 6]
    assert metas[0]["transform"] != metas[1]["transform"]
    # regenerate over an existing scene: replaced atomically, no temp folders left behind
    generate_scene(paths[0], SceneConfig(size=48, seed=9, relief="plains", erosion_iterations=4))
    assert json.loads((paths[0] / "scene.json").read_text())["seed"] == 9
    assert sorted(x.name for x in (tmp_path / "w").iterdir()) == ["scene_000", "scene_001"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 16},
        {"relief": "mountains"},
        {"pixel_size": 0.0},
        {"pixel_size": -5.0},
        {"sun_elevation": 0.0},
        {"sun_elevation": 95.0},
        {"cloud_cover": 1.5},
        {"cloud_cover": -0.1},
        {"elevation_range": (100.0, 100.0)},
        {"elevation_range": (500.0, 100.0)},
        {"crs": "EPSG:4326"},
    ],
)
def test_bad_config_raises_input_error(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(InputError) as exc:
        generate_scene(tmp_path / "bad", SceneConfig(**kwargs))
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "bad").exists()


def test_reliefs_constant() -> None:
    assert RELIEFS == ("plains", "hills", "alpine")


def test_height_rasters_carry_the_unknown_vertical_datum(hills: Path) -> None:
    from demgen.io.geodesy import vertical_crs_of

    for name in ("dtm.tif", "dsm.tif"):
        with rasterio.open(hills / name) as ds:
            assert ds.tags()["vertical_crs"] == "unknown" and vertical_crs_of(ds) == "unknown"
    text = (hills / "scene.json").read_text()
    meta = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert meta["vertical_crs"] == "unknown"


def test_stereo_initial_dsm_carries_the_unknown_vertical_datum(tmp_path: Path) -> None:
    cfg = SceneConfig(size=48, seed=2, relief="hills", stereo=True, erosion_iterations=2)
    d = generate_scene(tmp_path / "s", cfg)
    with rasterio.open(d / "initial_dsm.tif") as ds:
        assert ds.tags()["vertical_crs"] == "unknown"


def test_climate_drawn_per_seed_within_documented_ranges() -> None:
    from demgen.data.synth import draw_climate

    lo, hi = 200.0, 4000.0
    span = hi - lo
    climates = [draw_climate(seed, (lo, hi)) for seed in range(30)]
    assert draw_climate(7, (lo, hi)) == climates[7]  # a pure function of the seed
    snow = [c.snow_line_m for c in climates]
    assert len(set(snow)) == len(snow) and np.ptp(snow) > 0.4 * span
    for c in climates:
        assert lo + 0.4 * span <= c.tree_line_m <= lo + 1.4 * span
        assert 0.1 * span <= c.snow_line_m - c.tree_line_m <= 0.4 * span
        assert c.town_line_m <= c.farm_line_m < c.tree_line_m < c.rock_line_m
        assert 0.5 <= c.haze_factor <= 1.5 and c.line_noise_m == pytest.approx(0.08 * span)
    # relative to the scene's own range: a range twice as tall puts the lines twice as high
    assert draw_climate(7, (0.0, 2000.0)).snow_line_m == pytest.approx(
        2 * draw_climate(7, (0.0, 1000.0)).snow_line_m, abs=0.01
    )


def test_snow_follows_each_scenes_drawn_snow_line(tmp_path: Path) -> None:
    """Across seeds the snow line differs; within a scene snow lies exactly above it."""
    lines: list[tuple[float, float]] = []
    for seed in range(24):
        cfg = SceneConfig(size=160, seed=seed, relief="alpine", erosion_iterations=5)
        p = generate_scene(tmp_path / f"s{seed}", cfg)
        climate = json.loads((p / "scene.json").read_text())["climate"]
        assert climate == json.loads((p / "scene.json").read_text())["config"]["climate"]
        line, noise = climate["snow_line_m"], climate["line_noise_m"]
        dtm = _read(p / "dtm.tif")[0].astype(np.float64)
        snow = (_read(p / "landcover.tif")[0] == SNOW)[1:-1, 1:-1]
        gy, gx = np.gradient(dtm, 10.0)
        slope = np.hypot(gx, gy)[1:-1, 1:-1]  # the generator's own central differences
        z = dtm[1:-1, 1:-1]
        # the line wobbles by at most 1.2 x line_noise_m, concave ground lowers it by at most
        # 1.2 x and convex ground raises it by at most 0.6 x more
        assert not snow[z < line - 2.5 * noise].any(), seed
        sure = (z > line + 1.9 * noise) & (slope < 1.0)
        assert snow[sure].all(), seed
        if snow.any() and (~snow).any() and sure.any():
            lines.append((line, float(np.percentile(z[snow], 5))))
        if len(lines) >= 2 and max(lines)[0] - min(lines)[0] > 300.0:
            break
    assert len(lines) >= 2, "no scene with both snow and snow-free ground"
    (l1, z1), (l2, z2) = min(lines), max(lines)
    assert l2 - l1 > 300.0  # a different snow line ...
    assert z2 - z1 > 0.25 * (l2 - l1)  # ... and the snow starts higher with it
