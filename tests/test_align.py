"""Alignment: a scene warped to another CRS and back through prepare lands within half a pixel;
masks from nodata, NaN, clouds and scene edges propagate into the store."""

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from demgen.data.align import AlignedScene, Grid, image_scenes, resampling_for, scene_grid
from demgen.data.chips import ChipStore
from demgen.data.prepare import PrepareConfig, prepare_rasters
from demgen.data.synth import SceneConfig, generate_scene
from demgen.io.raster import write_raster


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene") / "s"
    return generate_scene(d, SceneConfig(size=128, seed=5, erosion_iterations=5))


def warp_to(src_path, dst_path, crs, resampling=Resampling.bilinear):
    with rasterio.open(src_path) as src:
        t, w, h = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds)
        out = np.zeros((src.count, h, w), src.dtypes[0])
        reproject(
            src.read(),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=t,
            dst_crs=crs,
            resampling=resampling,
            dst_nodata=0,
        )
        write_raster(
            dst_path, out, crs=crs, transform=t, nodata=0, descriptions=list(src.descriptions)
        )


def subpixel_shift(a, b):
    """Least-squares (dy, dx) such that b(y, x) ~ a(y - dy, x - dx), on a smooth field."""
    gy, gx = np.gradient(a)
    m = np.isfinite(a) & np.isfinite(b) & np.isfinite(gx) & np.isfinite(gy)
    A = np.stack([-gy[m], -gx[m]], axis=1)
    sol, *_ = np.linalg.lstsq(A, (b - a)[m], rcond=None)
    return sol


def test_image_warped_away_and_back_lands_within_half_a_pixel(scene, tmp_path):
    warp_to(scene / "image.tif", tmp_path / "image_4326.tif", "EPSG:4326")
    cfg = PrepareConfig(chip_size=32, grid="dem", image_normalize="scale", max_invalid=0.5)
    store = ChipStore(
        prepare_rasters([tmp_path / "image_4326.tif"], [scene / "dtm.tif"], tmp_path / "st", cfg)
    )
    with rasterio.open(scene / "image.tif") as src:
        orig = src.read().astype(np.float64)
        t0 = src.transform
    with rasterio.open(scene / "dtm.tif") as src:
        dtm = src.read(1)
    assert store.manifest["scenes"][0]["grid"]["crs"] == "EPSG:32633"
    shifts = []
    for j, chip in enumerate(store.chips):
        r, c = chip["row"], chip["col"]
        # chips lie exactly on the DEM's pixel grid, heights untouched
        assert chip["transform"] == list(t0 * rasterio.Affine.translation(c, r))[:6]
        np.testing.assert_array_equal(
            store.elevation[j][store.mask[j]], dtm[r : r + 32, c : c + 32][store.mask[j]]
        )
        m = store.mask[j]
        if m.mean() < 0.99:
            continue
        for b in range(4):
            a = orig[b, r : r + 32, c : c + 32]
            shifts.append(subpixel_shift(a, store.image[j, b].astype(np.float64)))
    shifts = np.array(shifts)
    assert len(shifts) >= 8
    assert np.abs(np.median(shifts, axis=0)).max() < 0.5


def test_dem_warped_away_and_back_matches_on_the_image_grid(scene, tmp_path):
    warp_to(scene / "dtm.tif", tmp_path / "dtm_3857.tif", "EPSG:3857")
    with rasterio.open(tmp_path / "dtm_3857.tif", "r+") as ds:
        ds.nodata = None  # 0 m is a valid height here; edges come from the warp's alpha
    img = image_scenes([scene / "image.tif"])
    grid = scene_grid(img[0], [tmp_path / "dtm_3857.tif"], grid="image")
    with rasterio.open(scene / "dtm.tif") as src:
        dtm = src.read(1).astype(np.float64)
        assert grid.crs == src.crs
    with AlignedScene(img[0], [tmp_path / "dtm_3857.tif"], grid) as al:
        _, h, valid, _ = al.read(rasterio.windows.Window(0, 0, grid.width, grid.height))
    col, row = (~rasterio.open(scene / "dtm.tif").transform) * (grid.transform.c, grid.transform.f)
    r0, c0 = round(row), round(col)
    ref = dtm[r0 : r0 + grid.height, c0 : c0 + grid.width]
    inner = valid.copy()
    inner[:3], inner[-3:], inner[:, :3], inner[:, -3:] = False, False, False, False
    dy, dx = subpixel_shift(ref, np.where(inner, h, np.nan))
    assert abs(dy) < 0.5 and abs(dx) < 0.5
    relief = np.ptp(ref)
    assert np.median(np.abs(h[inner] - ref[inner])) < 0.05 * relief


def test_masks_propagate_from_every_input(tmp_path, transform):
    rng = np.random.default_rng(0)
    size = 128
    img = rng.integers(100, 3000, (3, size, size)).astype(np.uint16)
    img[:, 0:10, 40:50] = 0  # image nodata
    dem = rng.normal(500, 20, (size, size)).astype(np.float32)
    dem[70:80, 70:80] = -9999.0  # DEM nodata
    dem[100:104, 10:14] = np.nan  # NaN
    clouds = np.zeros((size, size), np.uint8)
    clouds[5:15, 100:110] = 1
    write_raster(tmp_path / "img.tif", img, crs="EPSG:32633", transform=transform, nodata=0)
    write_raster(tmp_path / "dem.tif", dem, crs="EPSG:32633", transform=transform, nodata=-9999.0)
    write_raster(tmp_path / "cloud.tif", clouds, crs="EPSG:32633", transform=transform)
    cfg = PrepareConfig(chip_size=32, max_invalid=0.5, block=1)
    out = prepare_rasters(
        [tmp_path / "img.tif"],
        [tmp_path / "dem.tif"],
        tmp_path / "st",
        cfg,
        cloud_masks=[tmp_path / "cloud.tif"],
    )
    st = ChipStore(out)
    assert len(st) == 16
    full = np.zeros((size, size), bool)
    heights = np.full((size, size), np.inf)
    for j, ch in enumerate(st.chips):
        r, c = ch["row"], ch["col"]
        full[r : r + 32, c : c + 32] = st.mask[j]
        heights[r : r + 32, c : c + 32] = st.elevation[j]
        assert ch["valid_fraction"] == pytest.approx(st.mask[j].mean())
    expect = np.ones((size, size), bool)
    expect[0:10, 40:50] = False
    expect[70:80, 70:80] = False
    expect[100:104, 10:14] = False
    expect[5:15, 100:110] = False
    np.testing.assert_array_equal(full, expect)
    assert np.all(np.isnan(heights[~expect]))  # never filled with 0 m
    np.testing.assert_array_equal(heights[expect], dem[expect])


def test_scene_edges_are_masked_and_mostly_invalid_chips_dropped(tmp_path, transform):
    size = 128
    img = np.full((2, size, size), 1000, np.uint16)
    write_raster(tmp_path / "img.tif", img, crs="EPSG:32633", transform=transform)
    # the DEM covers only the left 80 columns of the image
    dem = np.full((size, 80), 250.0, np.float32)
    write_raster(tmp_path / "dem.tif", dem, crs="EPSG:32633", transform=transform)
    grid = scene_grid(image_scenes([tmp_path / "img.tif"])[0], [tmp_path / "dem.tif"], grid="image")
    assert (grid.width, grid.height) == (80, 128)  # cropped to the ground both cover
    cfg = PrepareConfig(
        chip_size=32, stride=16, max_invalid=0.25, grid="image", crs="EPSG:32633", resolution=10.0
    )
    out = prepare_rasters([tmp_path / "img.tif"], [tmp_path / "dem.tif"], tmp_path / "st", cfg)
    st = ChipStore(out)
    assert all(ch["valid_fraction"] >= 0.75 for ch in st.chips)
    assert st.manifest["stride"] == 16


def test_band_order_file_order_for_one_raster_band_number_for_per_band_files(tmp_path, transform):
    img = np.stack([np.full((8, 8), v, np.uint16) for v in (4, 3, 2)])
    write_raster(
        tmp_path / "multi.tif", img, crs="EPSG:32633", transform=transform,
        descriptions=["B4", "B3", "B2"],
    )  # fmt: skip
    (scene,) = image_scenes([tmp_path / "multi.tif"])
    assert [b.name for b in scene.bands] == ["B4", "B3", "B2"]  # the file's order
    (scene,) = image_scenes([tmp_path / "multi.tif"], ["1", "B2"])
    assert [(b.name, b.index) for b in scene.bands] == [("B4", 1), ("B2", 3)]
    for n in (10, 2, 1):
        write_raster(
            tmp_path / f"LT5_B{n}.TIF", img[0], crs="EPSG:32633", transform=transform
        )  # fmt: skip
    (scene,) = image_scenes(sorted(tmp_path.glob("LT5_B*.TIF")))
    assert [b.name for b in scene.bands] == ["B1", "B2", "B10"]  # by number, not by text
    assert [b.name for b in image_scenes(sorted(tmp_path.glob("LT5_B*.TIF")), ["3"])[0].bands] == [
        "B10"
    ]


def _lidar_pair(tmp_path, nodata_at=None):
    """A 1 m DEM (plane + a +-5 m checkerboard of 3 m squares) and a 10 m image over it."""
    n, f = 320, 10  # 320 m square: 1 m DEM, 32 x 32 px of 10 m
    x0, y0 = 500_000.0, 5_200_000.0
    rr, cc = np.mgrid[0:n, 0:n].astype(np.float64)
    plane = 100.0 + 0.1 * cc + 0.05 * rr
    checker = 5.0 * (-1.0) ** ((rr // 3) + (cc // 3))
    dem = plane + checker
    dem[200:210, 110:120] += 10.0  # a 10 x 10 m building, 10 m tall, on one 10 m cell
    dem = dem.astype(np.float32)
    if nodata_at is not None:
        dem[nodata_at] = -9999.0
    fine = rasterio.transform.from_origin(x0, y0, 1.0, 1.0)
    coarse = rasterio.transform.from_origin(x0, y0, 10.0, 10.0)
    write_raster(tmp_path / "lidar.tif", dem, crs="EPSG:32633", transform=fine, nodata=-9999.0)
    img = np.random.default_rng(0).integers(100, 3000, (3, n // f, n // f)).astype(np.uint16)
    write_raster(tmp_path / "s2.tif", img, crs="EPSG:32633", transform=coarse)
    return dem, f


def test_fine_dem_and_height_extra_are_averaged_onto_a_coarse_grid(tmp_path):
    # The 10 m truth is the block mean. GDAL's bilinear (a tent over two cells when shrinking)
    # made the building 5.6 m tall and spilt 0.9 m onto its neighbours; nearest is +-5 m off.
    dem, f = _lidar_pair(tmp_path, nodata_at=(15, 27))
    clouds = np.zeros(dem.shape, np.uint8)
    clouds[57, 295] = 1  # one cloudy 1 m pixel clouds its 10 m cell
    fine = rasterio.transform.from_origin(500_000.0, 5_200_000.0, 1, 1)
    write_raster(tmp_path / "cl.tif", clouds, crs="EPSG:32633", transform=fine)
    cfg = PrepareConfig(chip_size=16, grid="image", max_invalid=0.5, block=1)
    st = ChipStore(
        prepare_rasters(
            [tmp_path / "s2.tif"],
            [tmp_path / "lidar.tif"],
            tmp_path / "st",
            cfg,
            extras=[tmp_path / "lidar.tif"],
            cloud_masks=[tmp_path / "cl.tif"],
        )  # fmt: skip
    )
    means = dem.astype(np.float64).reshape(32, f, 32, f).mean(axis=(1, 3))
    expect_valid = np.ones((32, 32), bool)
    expect_valid[1, 2] = False  # holds the one nodata pixel: any invalid fine pixel
    expect_valid[5, 29] = False  # the cloud
    h = np.full((32, 32), np.nan)
    e = np.full((32, 32), np.nan)
    for j, ch in enumerate(st.chips):
        r, c = ch["row"], ch["col"]
        h[r : r + 16, c : c + 16] = st.elevation[j]
        e[r : r + 16, c : c + 16] = st.extra[j, 0]
    np.testing.assert_array_equal(np.isfinite(h), expect_valid)
    np.testing.assert_allclose(h[expect_valid], means[expect_valid], atol=1e-3)
    np.testing.assert_allclose(e[expect_valid], means[expect_valid], atol=1e-3)
    assert means[20, 11] - means[20, 10] > 9.9  # the building stands on its cell alone
    res = st.manifest["scenes"][0]["resampling"]
    assert res == {"image": ["none"], "dems": ["average"], "extras": ["average"],
                   "cloud_masks": ["max"]}  # fmt: skip
    assert st.manifest["extras"][0]["resampling"] == "average"


def test_averaged_cells_reaching_outside_the_source_are_invalid(tmp_path):
    _lidar_pair(tmp_path)
    # a 10 m grid shifted by 5 m: its edge cells are half outside the 1 m DEM
    grid = Grid(CRS.from_epsg(32633),
                rasterio.transform.from_origin(499_995.0, 5_200_005.0, 10, 10), 33, 33)  # fmt: skip
    (img,) = image_scenes([tmp_path / "s2.tif"])
    with AlignedScene(img, [tmp_path / "lidar.tif"], grid) as al:
        _, h, _, _ = al.read(rasterio.windows.Window(0, 0, 33, 33))
    inner = np.zeros((33, 33), bool)
    inner[1:-1, 1:-1] = True
    assert np.isfinite(h[inner]).all() and not np.isfinite(h[~inner]).any()


def test_resampling_rule_threshold():
    assert resampling_for("continuous", 10.0) == Resampling.average
    assert resampling_for("continuous", 1.5) == Resampling.average
    assert resampling_for("continuous", 1.4) == Resampling.bilinear
    assert resampling_for("continuous", 0.5) == Resampling.bilinear
    assert resampling_for("mask", 3.0) == Resampling.max
    assert resampling_for("mask", 1.0) == Resampling.nearest
    assert resampling_for("continuous", 10.0, "cubic") == Resampling.cubic


def test_inside_the_source_test_across_crs_matches_exact_corners(tmp_path):
    from rasterio.warp import transform, transform_bounds

    from demgen.data.warp import Layer

    n = 400  # a 1 m UTM DEM; a 10 m Web Mercator grid reaching past it on every side
    fine = rasterio.transform.from_origin(500_000.0, 5_200_000.0, 1, 1)
    write_raster(tmp_path / "u.tif", np.ones((n, n), np.float32), crs="EPSG:32633",
                 transform=fine)  # fmt: skip
    b = transform_bounds("EPSG:32633", "EPSG:3857", *rasterio.transform.array_bounds(n, n, fine))
    t = rasterio.transform.from_origin(b[0] - 20, b[3] + 20, 10, 10)
    grid = Grid(CRS.from_epsg(3857), t, int((b[2] - b[0]) / 10) + 5, int((b[3] - b[1]) / 10) + 5)
    with rasterio.open(tmp_path / "u.tif") as ds:
        layer = Layer(tmp_path / "u.tif", ds, grid, Resampling.average)
        win = rasterio.windows.Window(0, 0, grid.width, grid.height)
        inside = layer._inside(win)
        _, valid = layer.read([1], win)
        cc, rr = np.meshgrid(np.arange(grid.width + 1), np.arange(grid.height + 1))
        x, y = t * (cc, rr)
        xs, ys = transform("EPSG:3857", "EPSG:32633", x.ravel(), y.ravel())
        c, r = ~ds.transform * (np.array(xs).reshape(x.shape), np.array(ys).reshape(x.shape))
    ok = (c >= -1e-6) & (c <= n + 1e-6) & (r >= -1e-6) & (r <= n + 1e-6)
    exact = ok[:-1, :-1] & ok[1:, :-1] & ok[:-1, 1:] & ok[1:, 1:]
    np.testing.assert_array_equal(inside, exact)
    np.testing.assert_array_equal(valid, exact)
    assert 0 < exact.sum() < exact.size
