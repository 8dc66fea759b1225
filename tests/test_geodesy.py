"""Pixel sizes in metres: projected (metres, feet) and geographic (latitude-aware)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin

from demgen.io.geodesy import degree_lengths_m, pixel_size_m, vertical_crs_of
from demgen.io.jsonio import dumps
from demgen.io.raster import open_raster, pixel_size_metres, write_raster


def test_degree_lengths_match_published_values():
    # WGS84 lengths of a degree (NGA tables): equator 111,319.5 m (lon) and 110,574.3 m (lat);
    # 45 deg: 78,846.8 m and 111,131.7 m; 60 deg: 55,800.0 and 111,412.2 m.
    for lat, lon_m, lat_m in [(0, 111_319.5, 110_574.3), (45, 78_846.8, 111_131.7),
                              (60, 55_799.9, 111_412.2)]:  # fmt: skip
        x, y = degree_lengths_m(lat)
        assert x == pytest.approx(lon_m, abs=0.5) and y == pytest.approx(lat_m, abs=0.5)


def test_one_arcsecond_grid_at_45n():
    t = from_origin(10.0, 45.5, 1 / 3600, 1 / 3600)
    x, y = pixel_size_m("EPSG:4326", t, 3600, 3600)  # centre at 45 N
    assert x == pytest.approx(78_846.8 / 3600, rel=1e-4)
    assert y == pytest.approx(111_131.7 / 3600, rel=1e-4)


def test_projected_feet_and_metres():
    t = from_origin(0, 0, 10, 10)
    assert pixel_size_m("EPSG:32633", t, 10, 10) == (10.0, 10.0)
    # NAD83 / Texas Central (ftUS): US survey feet
    x, y = pixel_size_m("EPSG:2277", t, 10, 10)
    assert x == pytest.approx(3.048006, rel=1e-6) and y == pytest.approx(3.048006, rel=1e-6)


def test_dataset_helper_and_vertical_tag(tmp_path):
    a = np.zeros((8, 8), np.float32)
    p = write_raster(tmp_path / "d.tif", a, crs="EPSG:4326",
                     transform=from_origin(0, 0.5, 1 / 3600, 1 / 3600),
                     tags={"vertical_crs": "EGM2008 height"})  # fmt: skip
    with open_raster(p) as ds:
        expected = math.sqrt(111_319.5 / 3600 * 110_574.3 / 3600)
        assert pixel_size_metres(ds) == pytest.approx(expected, rel=1e-3)
        assert vertical_crs_of(ds) == "EGM2008 height"
    q = write_raster(tmp_path / "e.tif", a, crs=CRS.from_user_input("EPSG:32633"),
                     transform=from_origin(0, 0, 10, 10))  # fmt: skip
    with open_raster(q) as ds:
        assert vertical_crs_of(ds) == "unknown"


def test_strict_json():
    text = dumps({"a": float("nan"), "b": [float("inf"), np.float32(1.5)], "c": np.int64(3)})
    assert "NaN" not in text and "Infinity" not in text
    assert '"a": null' in text and "1.5" in text


def test_write_raster_records_the_vertical_datum(tmp_path):
    a = np.zeros((8, 8), np.float32)
    t = from_origin(0, 0, 10, 10)
    p = write_raster(tmp_path / "v.tif", a, crs="EPSG:32633", transform=t,
                     vertical_crs="EGM2008 height", tags={"other": "x"})  # fmt: skip
    with open_raster(p) as ds:
        assert vertical_crs_of(ds) == "EGM2008 height" and ds.tags()["other"] == "x"


def test_horizontal_part_of_a_compound_crs():
    from demgen.io.geodesy import horizontal_crs

    compound = CRS.from_user_input("EPSG:32633+5773")
    assert horizontal_crs(compound) == CRS.from_epsg(32633)
    assert horizontal_crs(CRS.from_epsg(4326)) == CRS.from_epsg(4326)
    assert horizontal_crs(None) is None


def test_web_mercator_pixels_are_measured_on_the_ground():
    """A "10 m" EPSG:3857 pixel at 47 N covers 10 cos(47 deg) = 6.82 m of ground; at the
    equator 10 m; UTM stays at face value."""
    from rasterio.warp import transform as warp_points

    xs, ys = warp_points("EPSG:4326", "EPSG:3857", [10.0, 10.0], [47.0, 0.0])
    for y, lat in ((ys[0], 47.0), (ys[1], 0.0)):
        t = from_origin(xs[0] - 50, y + 50, 10, 10)
        x_m, y_m = pixel_size_m("EPSG:3857", t, 10, 10)
        want = 10 * math.cos(math.radians(lat))
        assert x_m == pytest.approx(want, rel=1e-3) and y_m == pytest.approx(want, rel=1e-3)
    assert pixel_size_m("EPSG:32633", from_origin(500_000, 5e6, 10, 10), 10, 10) == (10.0, 10.0)
