"""SpaceNet 7 import: a tiny generated fixture in SpaceNet 7's layout, masks checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from demgen.data.spacenet7 import import_spacenet7, parse_sn7_name
from demgen.data.timelayout import FRAME_FILES, read_times
from demgen.errors import InputError
from demgen.io.raster import write_raster

AREAS = ("L15-0331E-1257N_1327_3160_13", "L15-0358E-1220N_1433_3310_13")
MONTHS = ("2018_01", "2018_02", "2018_04")  # a month missing, as in real series
SIZE = 64


def _rect(c0: float, r0: float, c1: float, r1: float) -> dict:
    """Pixel-space polygon (x = column, y = row), closed ring, with a z value like SpaceNet's."""
    ring = [[c0, r0, 0.0], [c1, r0, 0.0], [c1, r1, 0.0], [c0, r1, 0.0], [c0, r0, 0.0]]
    return {"type": "Polygon", "coordinates": [ring]}


def _feature(geom: dict | None, i: int) -> dict:
    return {"type": "Feature", "properties": {"Id": i, "area": 0.0}, "geometry": geom}


# per month: building polygons (the second area adds one in April and an empty geometry)
POLYS = {
    0: [_rect(10, 5, 20, 15)],
    1: [_rect(10, 5, 20, 15), _rect(40.2, 30.2, 45.8, 33.8)],
    2: [_rect(10, 5, 20, 15), _rect(40.2, 30.2, 45.8, 33.8), _rect(0, 60, 3, 64)],
}


def _make_area(root: Path, area: str, k: int) -> None:
    rng = np.random.default_rng(k)
    for m, month in enumerate(MONTHS):
        stem = f"global_monthly_{month}_mosaic_{area}"
        img = rng.integers(1, 255, size=(4, SIZE, SIZE)).astype(np.uint8)
        img[3] = 255
        if m == 1:
            img[3, :16, :] = 0  # a quarter of February masked (cloud)
            img[:3, :16, :] = 0
        write_raster(root / area / "images_masked" / f"{stem}.tif", img, crs="EPSG:3857",
                     transform=from_origin(-1e6 + k * 1e4, 1.4e6, 4.77, 4.77))  # fmt: skip
        feats = [_feature(g, i) for i, g in enumerate(POLYS[m])]
        if k == 1:
            feats.append(_feature(None, 99))
            feats.append(_feature({"type": "Polygon", "coordinates": []}, 98))
        label = root / area / "labels_match_pix" / f"{stem}_Buildings.geojson"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    (root / area / "images_masked" / "notes.txt").write_text("ignored")


@pytest.fixture
def sn7(tmp_path: Path) -> Path:
    root = tmp_path / "sn7"
    for k, area in enumerate(AREAS):
        _make_area(root, area, k)
    return root


def _expected(m: int) -> np.ndarray:
    """Masks by hand: pixel (r, c) is a building when its centre (c + .5, r + .5) is inside."""
    e = np.zeros((SIZE, SIZE), np.uint8)
    e[5:15, 10:20] = 1  # columns 10..19, rows 5..14
    if m >= 1:
        e[30:34, 40:46] = 1  # centres 40.5..45.5 in [40.2, 45.8], 30.5..33.5 in [30.2, 33.8]
    if m >= 2:
        e[60:64, 0:3] = 1
    return e


def test_parse_name() -> None:
    d, area = parse_sn7_name("global_monthly_2018_01_mosaic_L15-0331E-1257N_1327_3160_13.tif")
    assert d.isoformat() == "2018-01-01" and area == "L15-0331E-1257N_1327_3160_13"
    with pytest.raises(InputError):
        parse_sn7_name("global_monthly_2018_13_mosaic_x.tif")
    with pytest.raises(InputError):
        parse_sn7_name("mosaic.tif")


def test_import_two_areas(sn7: Path, tmp_path: Path) -> None:
    paths = import_spacenet7(sn7, tmp_path / "out")
    assert [p.name for p in paths] == list(AREAS)
    for k, place in enumerate(paths):
        doc = read_times(place)
        assert doc["source"] == "spacenet7" and doc["area"] == AREAS[k]
        assert doc["dates"] == ["2018-01-01", "2018-02-01", "2018-04-01"]
        assert doc["day_gaps"] == [0, 31, 59] and doc["days_since_first"] == [0, 31, 90]
        assert doc["cloud_fraction"] == [0.0, 0.25, 0.0]
        assert doc["bands"] == ["R", "G", "B"] and doc["reflectance_scale"] is None
        assert [fr["n_buildings"] for fr in doc["frames"]] == [1, 2, 3]
        for m, fr in enumerate(doc["frames"]):
            assert sorted(p.name for p in (place / fr["dir"]).iterdir()) == sorted(FRAME_FILES)
            with rasterio.open(place / fr["dir"] / "buildings.tif") as ds:
                mask = ds.read(1)
                assert ds.crs.to_epsg() == 3857 and ds.transform.a == pytest.approx(4.77)
            assert np.array_equal(mask, _expected(m)), (k, m)
            assert fr["building_pixels"] == int(_expected(m).sum())
            clouds = rasterio.open(place / fr["dir"] / "clouds.tif").read(1)
            assert clouds.sum() == (16 * SIZE if m == 1 else 0)
            with rasterio.open(place / fr["dir"] / "image.tif") as ds:
                assert ds.count == 3 and ds.dtypes[0] == "uint8"
                src = sn7 / AREAS[k] / "images_masked" / Path(fr["source_image"]).name
                assert np.array_equal(ds.read(), rasterio.open(src).read()[:3])


def test_single_area_and_errors(sn7: Path, tmp_path: Path) -> None:
    (place,) = import_spacenet7(sn7 / AREAS[0], tmp_path / "one")
    assert read_times(place)["n_dates"] == 3
    next((sn7 / AREAS[1] / "labels_match_pix").glob("*2018_02*")).unlink()
    with pytest.raises(InputError, match="labels of"):
        import_spacenet7(sn7, tmp_path / "bad")
    assert not (tmp_path / "bad" / AREAS[1]).exists()
    with pytest.raises(InputError, match="no SpaceNet 7 area"):
        import_spacenet7(tmp_path / "one", tmp_path / "x")
