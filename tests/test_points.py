"""demgen points: a DEM as a point cloud in its CRS, coloured by an image, relative heights
flagged; gridding it back with demgen lidar returns the DEM to the LAS millimetre."""

from __future__ import annotations

import laspy
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from demgen.cli import main as cli_main
from demgen.data.synth import SceneConfig, generate_scene
from demgen.inference.scene import NODATA
from demgen.io.geodesy import VERTICAL_CRS_TAG
from demgen.io.raster import read_raster, write_raster
from demgen.pointcloud.lasio import read_info

LAS_STEP = 0.001  # LAS scale: heights stored to the millimetre


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("points")
    return generate_scene(d / "scene", SceneConfig(size=64, seed=2, erosion_iterations=4))


@pytest.fixture
def dem_with_holes(scene, tmp_path):
    """The scene's DSM with -9999 holes and a NaN, tagged with a vertical datum."""
    z, p = read_raster(scene / "dsm.tif")
    z = z[0].copy()
    z[5:9, 10:20] = NODATA
    z[40, 40] = np.nan
    path = tmp_path / "dem.tif"
    write_raster(path, z, crs=p["crs"], transform=p["transform"], nodata=NODATA,
                 tags={VERTICAL_CRS_TAG: "EGM2008 height"})  # fmt: skip
    return path, z, p


def test_roundtrip_through_lidar_returns_the_dem(dem_with_holes, tmp_path):
    path, z, p = dem_with_holes
    laz = tmp_path / "dem.laz"
    assert cli_main(["points", str(path), "-o", str(laz), "-q"]) == 0
    valid = np.isfinite(z) & (z != NODATA)
    info = read_info(laz)
    assert info.count == valid.sum() and info.crs == CRS.from_user_input(p["crs"])
    assert info.vertical == "EGM2008 height" and not info.relative
    las = laspy.read(laz)
    assert las.header.point_format.id == 6 and (las.classification == 1).all()
    # one point per valid cell, at the cell centre
    t = p["transform"]
    cols = np.round((np.asarray(las.x) - t.c) / t.a - 0.5)
    assert np.abs((np.asarray(las.x) - t.c) / t.a - 0.5 - cols).max() < 1e-3
    assert cli_main(["lidar", str(laz), "-o", str(tmp_path / "back"), "--resolution",
                     str(t.a), "-q"]) == 0  # fmt: skip
    back, bp = read_raster(tmp_path / "back" / "dsm.tif")
    assert bp["transform"] == t and back.shape[1:] == z.shape  # the same grid, unprompted
    back = back[0]
    np.testing.assert_array_equal(back == NODATA, ~valid)  # nodata exactly where it was
    err = np.abs(back[valid].astype(np.float64) - z[valid])
    assert err.max() <= LAS_STEP / 2 + 1e-4  # rounding to the LAS millimetre, in float32
    with rasterio.open(tmp_path / "back" / "dsm.tif") as ds:
        assert ds.tags()[VERTICAL_CRS_TAG] == "EGM2008 height"
        assert ds.tags()["heights"] == "absolute"


def test_bounds_give_back_a_grid_not_aligned_to_the_resolution(scene, tmp_path):
    z, p = read_raster(scene / "dtm.tif")
    t = p["transform"]
    shifted = rasterio.Affine(t.a, 0, t.c + 3.0, 0, t.e, t.f - 7.0)
    path = write_raster(tmp_path / "s.tif", z[0], crs=p["crs"], transform=shifted)
    assert cli_main(["points", str(path), "-o", str(tmp_path / "s.las"), "-q"]) == 0
    west, south, east, north = rasterio.transform.array_bounds(*z.shape[1:], shifted)
    assert cli_main(["lidar", str(tmp_path / "s.las"), "-o", str(tmp_path / "o"), "--resolution",
                     "10", "--bounds", f"{west},{south},{east},{north}", "-q"]) == 0  # fmt: skip
    back, bp = read_raster(tmp_path / "o" / "dsm.tif")
    assert bp["transform"] == shifted
    assert np.abs(back[0].astype(np.float64) - z[0]).max() <= LAS_STEP / 2 + 1e-4


def test_colour_from_the_image_b4_b3_b2_16_bit(scene, tmp_path):
    z, p = read_raster(scene / "dtm.tif")
    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, size=(3, *z.shape[1:])).astype(np.uint8)
    # bands described B2 B3 B4 (blue first): red must come from the third band
    write_raster(tmp_path / "rgb8.tif", img8, crs=p["crs"], transform=p["transform"],
                 descriptions=["B2", "B3", "B4"])  # fmt: skip
    out = tmp_path / "c.laz"
    assert cli_main(["points", str(scene / "dtm.tif"), "-o", str(out), "--image",
                     str(tmp_path / "rgb8.tif"), "-q"]) == 0  # fmt: skip
    las = laspy.read(out)
    assert las.header.point_format.id == 7
    t = p["transform"]
    col = ((np.asarray(las.x) - t.c) / t.a).astype(int)
    row = ((t.f - np.asarray(las.y)) / -t.e).astype(int)
    np.testing.assert_array_equal(np.asarray(las.red), img8[2, row, col].astype(np.uint16) * 257)
    np.testing.assert_array_equal(np.asarray(las.blue), img8[0, row, col].astype(np.uint16) * 257)
    # the synthetic uint16 reflectance image in another CRS: reprojected and stretched
    with rasterio.open(scene / "image.tif") as src:
        from rasterio.warp import calculate_default_transform, reproject

        dst_crs = CRS.from_epsg(4326)
        tr, w, h = calculate_default_transform(src.crs, dst_crs, src.width, src.height,
                                               *src.bounds)  # fmt: skip
        arr = np.zeros((src.count, h, w), np.uint16)
        reproject(src.read(), arr, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=tr, dst_crs=dst_crs)  # fmt: skip
        write_raster(tmp_path / "geo.tif", arr, crs=dst_crs, transform=tr, nodata=0,
                     descriptions=list(src.descriptions))  # fmt: skip
    out2 = tmp_path / "c2.laz"
    assert cli_main(["points", str(scene / "dtm.tif"), "-o", str(out2), "--image",
                     str(tmp_path / "geo.tif"), "-q"]) == 0  # fmt: skip
    las2 = laspy.read(out2)
    red = np.asarray(las2.red)
    assert red.max() == 65535 and np.percentile(red, 50) > 0 and len(np.unique(red)) > 100


def test_relative_heights_are_flagged_and_carried_through(scene, tmp_path):
    z, p = read_raster(scene / "dsm.tif")
    rel = write_raster(tmp_path / "rel.tif", z[0] - z[0].mean(), crs=p["crs"],
                       transform=p["transform"], nodata=NODATA,
                       tags={"heights": "relative"})  # fmt: skip
    out = tmp_path / "rel.las"
    assert cli_main(["points", str(rel), "-o", str(out), "-q"]) == 0
    las = laspy.read(out)
    assert "relative" in las.header.system_identifier
    assert any(v.user_id == "demgen" and v.description == "heights=relative"
               for v in las.header.vlrs)  # fmt: skip
    assert read_info(out).relative
    assert cli_main(["lidar", str(out), "-o", str(tmp_path / "o"), "--resolution", "10",
                     "-q"]) == 0  # fmt: skip
    with rasterio.open(tmp_path / "o" / "dsm.tif") as ds:
        assert ds.tags()["heights"] == "relative" and ds.tags()[VERTICAL_CRS_TAG] == "relative"


def test_points_errors_are_one_line(scene, tmp_path, capsys):
    assert cli_main(["points", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "a.laz")]) == 2
    assert cli_main(["points", str(scene / "dsm.tif"), "-o", str(tmp_path / "a.xyz"), "-q"]) == 2
    empty = write_raster(tmp_path / "e.tif", np.full((4, 4), NODATA, np.float32),
                         crs="EPSG:32633", transform=rasterio.Affine(1, 0, 0, 0, -1, 4),
                         nodata=NODATA)  # fmt: skip
    assert cli_main(["points", str(empty), "-o", str(tmp_path / "e.laz"), "-q"]) == 2
    assert not (tmp_path / "e.laz").exists()
    assert cli_main(["points", str(scene / "dsm.tif"), "-o", str(tmp_path / "d.laz"), "-q"]) == 0
    assert cli_main(["points", str(scene / "dsm.tif"), "-o", str(tmp_path / "d.laz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("demgen points: error: ") for e in err)
