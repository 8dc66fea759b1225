"""demgen lidar: point clouds synthesized from a synthetic world grid back to its DSM and DTM;
noise and outliers removed but summits kept; the harmonic DTM fill; CRS and datum from the
header; nodata only where points are missing; lidar -> prepare -> refine fit."""

from __future__ import annotations

import json

import laspy
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from demgen.cli import main as cli_main
from demgen.data.synth import SceneConfig, generate_scene
from demgen.inference.scene import NODATA
from demgen.io.geodesy import VERTICAL_CRS_TAG
from demgen.io.raster import read_raster
from demgen.pointcloud.fill import harmonic_fill, within_reach
from demgen.pointcloud.grid import Accumulator, GridSpec
from demgen.pointcloud.lasio import PointChunk, read_info
from demgen.pointcloud.lidar import LidarConfig, grid_lidar
from demgen.pointcloud.outliers import default_threshold, filter_dsm, filter_dtm

RES = 10.0
SIGMA = 0.03  # lidar range noise (m): 3DEP QL1/QL2 require <= 10 cm RMSE in open terrain
HOLE = (slice(30, 46), slice(40, 58))  # rows, cols of the scene with no points at all
MAX_GAP = 50.0  # metres: 5 cells, so the middle of the 16 x 18-cell hole stays nodata


# --- a synthetic lidar survey of a synthetic world ---------------------------------------


def survey(scene, seed=0, first_per_cell=4, canopy_ground=0.5, hole=HOLE):
    """Points of a lidar survey of ``scene`` (dsm.tif, dtm.tif): a dict of arrays.

    Each cell gets ``first_per_cell`` first returns at random positions on the surface
    ``dsm[cell] + g . d`` (``g`` the terrain gradient, ``d`` the offset from the cell centre,
    so heights vary within the cell like a tilted plane) plus range noise. Open cells' first
    returns are ground (class 2, only return); in canopy a last return reaches the ground
    with probability ``canopy_ground`` (class 2, return 2 of 2, the first return class 5);
    buildings (class 6) have no ground. Then: 6 unclassified lone noise returns 60-150 m high
    and 6 low 30-60 m under the ground, 40 noise points classed 7 or 18 and 20 withheld
    points (all wild), and 3 ground-classified low outliers in open cells. ``hole`` has none.
    """
    rng = np.random.default_rng(seed)
    dsm, prof = read_raster(scene / "dsm.tif")
    dtm, _ = read_raster(scene / "dtm.tif")
    dsm, dtm = dsm[0].astype(np.float64), dtm[0].astype(np.float64)
    t = prof["transform"]
    h, w = dsm.shape
    gy, gx = np.gradient(dtm, RES)  # per metre, rows run south
    obj = dsm - dtm
    building = (obj > 0.5) & (np.abs(np.gradient(obj)[0]) + np.abs(np.gradient(obj)[1]) < 0.2)
    cells = np.argwhere(np.ones((h, w), bool))
    cells = cells[~((cells[:, 0] >= hole[0].start) & (cells[:, 0] < hole[0].stop)
                    & (cells[:, 1] >= hole[1].start) & (cells[:, 1] < hole[1].stop))]  # fmt: skip
    r = np.repeat(cells[:, 0], first_per_cell)
    c = np.repeat(cells[:, 1], first_per_cell)
    # inside the cell by more than the LAS coordinate scale (1 mm), so the quantized point
    # never lands in the neighbouring cell, whose surface the world's DSM does not share
    dx = rng.uniform(-0.499, 0.499, len(r)) * RES
    dy = rng.uniform(-0.499, 0.499, len(r)) * RES
    x = t.c + (c + 0.5) * RES + dx
    y = t.f - (r + 0.5) * RES + dy
    tilt = gx[r, c] * dx - gy[r, c] * dy
    z_first = dsm[r, c] + tilt + rng.normal(0, SIGMA, len(r))
    open_ = obj[r, c] <= 0.5
    cls = np.where(open_, 2, np.where(building[r, c], 6, 5)).astype(np.uint8)
    ret = np.ones(len(r), np.uint8)
    nret = np.where(open_ | building[r, c], 1, 2).astype(np.uint8)
    # ground under canopy: last returns
    under = ~open_ & ~building[r, c] & (rng.random(len(r)) < canopy_ground)
    zg = dtm[r, c] + tilt + rng.normal(0, SIGMA, len(r))
    pts = {
        "x": np.r_[x, x[under]], "y": np.r_[y, y[under]], "z": np.r_[z_first, zg[under]],
        "classification": np.r_[cls, np.full(under.sum(), 2, np.uint8)],
        "return_number": np.r_[ret, np.full(under.sum(), 2, np.uint8)],
        "number_of_returns": np.r_[nret, np.full(under.sum(), 2, np.uint8)],
        "withheld": np.zeros(len(r) + under.sum(), bool),
    }  # fmt: skip
    # noise: lone unclassified returns, classified noise, withheld points, bad ground
    k = rng.choice(len(r), 6 + 6 + 40 + 20 + 3, replace=False)
    kinds = (["high"] * 6 + ["low"] * 6 + ["class"] * 40 + ["withheld"] * 20
             + ["badground"] * 3)  # fmt: skip
    for i, kind in zip(k, kinds, strict=True):
        z = dsm[r[i], c[i]]
        extra = {"x": x[i], "y": y[i], "return_number": 1, "number_of_returns": 1,
                 "withheld": False, "classification": 1}  # fmt: skip
        if kind == "high":
            extra["z"] = z + rng.uniform(60, 150)
        elif kind == "low":
            extra["z"] = dtm[r[i], c[i]] - rng.uniform(30, 60)
        elif kind == "class":
            extra.update(z=z + rng.choice([-80, 300]), classification=int(rng.choice([7, 18])))
        elif kind == "withheld":
            extra.update(z=z + 200, withheld=True)
        else:
            open_cells = np.flatnonzero(open_)
            j = open_cells[rng.integers(len(open_cells))]
            extra.update(x=x[j], y=y[j], z=dtm[r[j], c[j]] - 40, classification=2)
        for key, v in extra.items():
            pts[key] = np.append(pts[key], v)
    return pts


def write_cloud(path, pts, *, crs="EPSG:32633", fmt=6, version="1.4", geokeys=False, sl=None):
    """Write ``pts`` (a slice ``sl`` of them) as LAS/LAZ with laspy, CRS as WKT or GeoKeys."""
    sl = slice(None) if sl is None else sl
    header = laspy.LasHeader(point_format=fmt, version=version)
    header.scales = np.array([0.001] * 3)
    header.offsets = np.array([np.floor(pts["x"].min()), np.floor(pts["y"].min()), 0.0])
    if crs is not None and geokeys:
        vlr = laspy.vlrs.known.GeoKeyDirectoryVlr()
        E = laspy.vlrs.known.GeoKeyEntryStruct
        vlr.geo_keys = [E(1024, 0, 1, 1), E(3072, 0, 1, int(crs.split(":")[1]))]
        vlr.geo_keys_header.number_of_keys = len(vlr.geo_keys)
        header.vlrs.append(vlr)
    elif crs is not None:
        header.vlrs.append(
            laspy.vlrs.known.WktCoordinateSystemVlr(CRS.from_user_input(crs).to_wkt())
        )
        header.global_encoding.wkt = True
    las = laspy.LasData(header)
    las.x, las.y, las.z = pts["x"][sl], pts["y"][sl], pts["z"][sl]
    for key in ("classification", "return_number", "number_of_returns", "withheld"):
        setattr(las, key, pts[key][sl])
    las.write(str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("lidarworld")
    # plains seed 4: crops, grass, forest (trees ~20 m) and an urban block (buildings ~9 m)
    return generate_scene(d / "scene", SceneConfig(size=96, seed=4, relief="plains",
                                                   erosion_iterations=4))  # fmt: skip


@pytest.fixture(scope="module")
def gridded(world, tmp_path_factory):
    """The survey as three tiles (LAS 1.2 with GeoKeys, LAZ 1.4 with WKT, LAS 1.4), gridded."""
    d = tmp_path_factory.mktemp("lidar")
    pts = survey(world)
    order = np.argsort(pts["x"], kind="stable")
    pts = {k: v[order] for k, v in pts.items()}
    n = len(pts["x"])
    a, b = n // 3, 2 * n // 3
    files = [
        write_cloud(d / "t1.las", pts, fmt=1, version="1.2", geokeys=True, sl=slice(0, a)),
        write_cloud(d / "t2.laz", pts, sl=slice(a, b)),
        write_cloud(d / "t3.las", pts, sl=slice(b, n)),
    ]
    out = d / "out"
    assert cli_main(["lidar", *map(str, files), "-o", str(out), "--resolution", "10",
                     "--max-gap", str(MAX_GAP), "-q"]) == 0  # fmt: skip
    return out, pts


def _cell_tolerance(world):
    """Per-cell bound: the rise of the cell's own tilted plane (half-diagonal) + 5 sigma."""
    dtm, _ = read_raster(world / "dtm.tif")
    gy, gx = np.gradient(dtm[0].astype(np.float64), RES)
    return np.hypot(gx, gy) * RES * np.sqrt(0.5) + 5 * SIGMA


def test_mosaic_matches_the_worlds_dsm_and_dtm(world, gridded):
    out, pts = gridded
    dsm, p = read_raster(out / "dsm.tif")
    dtm, _ = read_raster(out / "dtm.tif")
    true_dsm, tp = read_raster(world / "dsm.tif")
    true_dtm, _ = read_raster(world / "dtm.tif")
    dsm, dtm, true_dsm, true_dtm = dsm[0], dtm[0], true_dsm[0], true_dtm[0]
    # one grid: the three tiles' extent, snapped to 10 m, is the scene's grid
    assert p["transform"] == tp["transform"] and dsm.shape == true_dsm.shape
    assert CRS.from_user_input(p["crs"]) == CRS.from_epsg(32633)
    assert p["dtype"] == "float32" and p["nodata"] == NODATA and np.isfinite(dsm).all()
    hole = np.zeros(dsm.shape, bool)
    hole[HOLE] = True
    tol = _cell_tolerance(world)
    # DSM: every cell with points within its own slope's rise (+ 5 sigma) of the world's:
    # the 12 lone noise returns, 40 noise-class and 20 withheld points left no trace
    err = np.abs(dsm - true_dsm)[~hole]
    assert (err <= tol[~hole]).all(), float((err - tol[~hole]).max())
    assert np.median(err) < 0.5 and np.percentile(err, 99) < 1.5
    # DTM where ground was seen: the mean of the ground returns, within 0.1 m (median)
    s = json.loads((out / "lidar.json").read_text())
    assert s["points"]["noise"] == 40 and s["points"]["withheld"] == 20
    assert s["dsm"]["outliers"] >= 6  # the high lone returns (low ones hide under the DSM)
    assert s["dtm"]["trimmed"] >= 3  # the ground-classified low outliers
    dens, _ = read_raster(out / "density.tif")
    ground = np.zeros(dsm.shape, int)
    gx = ((pts["x"] - tp["transform"].c) // RES).astype(int)
    gy = ((tp["transform"].f - pts["y"]) // RES).astype(int)
    keep = (pts["classification"] == 2) & ~pts["withheld"]
    np.add.at(ground, (gy[keep], gx[keep]), 1)
    seen = ground > 0
    e_seen = np.abs(dtm - true_dtm)[seen]
    assert np.median(e_seen) < 0.1 and (e_seen <= tol[seen]).all(), e_seen.max()
    # DTM under buildings (no ground returns): the harmonic fill, within 1 m at the 95th pct
    filled = ~seen & ~hole
    assert filled.sum() > 50
    e_fill = np.abs(dtm - true_dtm)[filled]
    assert np.percentile(e_fill, 95) < 1.0 and e_fill.max() < 2.5, (np.median(e_fill), e_fill.max())
    # density: every kept point of any class counted once
    kept = ~pts["withheld"] & ~np.isin(pts["classification"], [7, 18])
    assert dens.sum() == kept.sum() == s["points"]["kept"]
    with rasterio.open(out / "density.tif") as ds:
        assert ds.nodata is None and ds.dtypes[0] == "float32"  # 0 points is a known value


def test_nodata_only_where_points_are_missing(world, gridded):
    out, _ = gridded
    dsm, _ = read_raster(out / "dsm.tif")
    dtm, _ = read_raster(out / "dtm.tif")
    dens, _ = read_raster(out / "density.tif")
    hole = np.zeros(dsm.shape[1:], bool)
    hole[HOLE] = True
    np.testing.assert_array_equal(dsm[0] == NODATA, hole)
    np.testing.assert_array_equal(dens[0] == 0, hole)
    # DTM: the hole's rim (within 5 cells = max gap of ground) is filled, its middle is not
    nod = dtm[0] == NODATA
    assert not nod[~hole].any()
    assert not nod[34, 48] and nod[35, 48]  # 5 and 6 cells from the ground at row 29
    assert not nod[37, 44] and nod[37, 45]  # 5 and 6 cells from the ground at column 39
    assert 0 < nod.sum() < hole.sum() // 2


def test_header_crs_vertical_datum_and_missing_crs(world, tmp_path):
    pts = survey(world, first_per_cell=1, hole=(slice(0, 0), slice(0, 0)))
    compound = write_cloud(tmp_path / "c.laz", pts, crs="EPSG:32633+5773")
    info = read_info(compound)
    assert info.vertical == "EGM96 height" and info.count == len(pts["x"])
    grid_lidar([compound], tmp_path / "c", LidarConfig(resolution=20.0), progress=False)
    with rasterio.open(tmp_path / "c" / "dsm.tif") as ds:
        assert ds.tags()[VERTICAL_CRS_TAG] == "EGM96 height" and ds.res == (20.0, 20.0)
    with rasterio.open(tmp_path / "c" / "dtm.tif") as ds:
        assert ds.tags()[VERTICAL_CRS_TAG] == "EGM96 height"
    bare = write_cloud(tmp_path / "bare.las", pts, crs=None)
    assert read_info(bare).crs is None
    assert cli_main(["lidar", str(bare), "-o", str(tmp_path / "b"), "--resolution", "20"]) == 2
    assert cli_main(["lidar", str(bare), "-o", str(tmp_path / "b"), "--resolution", "20",
                     "--crs", "EPSG:32633", "-q"]) == 0  # fmt: skip
    with rasterio.open(tmp_path / "b" / "dsm.tif") as ds:
        assert ds.crs == CRS.from_epsg(32633) and ds.tags()[VERTICAL_CRS_TAG] == "unknown"
    # a header CRS that disagrees with --crs, and tiles in different CRSs, are refused
    assert cli_main(["lidar", str(compound), "-o", str(tmp_path / "x"), "--resolution", "20",
                     "--crs", "EPSG:32632"]) == 2  # fmt: skip
    other = write_cloud(tmp_path / "o.las", pts, crs="EPSG:32632")
    assert cli_main(["lidar", str(bare), str(other), "-o", str(tmp_path / "y"), "--resolution",
                     "20", "--crs", "EPSG:32633"]) == 2  # fmt: skip
    # outputs are not overwritten without --overwrite
    assert cli_main(["lidar", str(bare), "-o", str(tmp_path / "b"), "--resolution", "20",
                     "--crs", "EPSG:32633"]) == 2  # fmt: skip


def test_errors_are_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.laz"
    junk.write_bytes(b"not a point cloud")
    assert cli_main(["lidar", str(junk), "-o", str(tmp_path / "o"), "--resolution", "1"]) == 2
    assert cli_main(["lidar", str(tmp_path / "none.las"), "-o", str(tmp_path / "o"),
                     "--resolution", "1"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("demgen lidar: error: ") for e in err)


# --- the outlier filter: noise out, summits in --------------------------------------------


def _chunk(x, y, z, cls=1, ret=1):
    n = len(x)
    return PointChunk(
        np.asarray(x, float), np.asarray(y, float), np.asarray(z, float),
        np.full(n, cls, np.uint8), np.full(n, ret, np.uint8), np.zeros(n, bool),
    )  # fmt: skip


def test_isolated_returns_go_but_summits_and_tree_tops_stay():
    """On a steep cone of ground returns (56-degree flanks, one return per cell): the summit,
    a one-cell tree 15 m tall with two canopy returns, a 2 x 2-cell spire rising 30 m and a canopy
    gap (a ground return amid 15 m canopy) stay; a lone bird 40 m up in a cell of its own
    and a lone return 40 m under the ground become nodata, and a bird over a canopy cell
    gives way to the canopy return below it."""
    g = GridSpec(0.0, 40.0, 1.0, 40, 40, CRS.from_epsg(32633))
    acc = Accumulator(g)
    yy, xx = np.mgrid[:40, :40]
    cx, cy = xx + 0.5, 40 - (yy + 0.5)
    cone = np.maximum(100.0 - 1.5 * np.hypot(xx - 10, yy - 10), 80.0)  # peak at cell (10, 10)
    ground = cone.copy()
    ground[35, 35] -= 40.0  # a lone return under the ground
    alone = np.ones(cone.shape, bool)
    alone[30, 5] = False  # no return here but the bird
    acc.add(_chunk(cx[alone], cy[alone], ground[alone], cls=2))
    canopy = np.zeros(cone.shape, bool)
    canopy[2:9, 30:38] = True
    canopy[5, 33] = False  # the gap
    canopy[30, 30] = True  # the one-cell tree
    canopy[20:22, 30:32] = True  # the spire
    top = cone + np.where((yy >= 20) & (yy < 22), 30.0, 15.0)
    acc.add(_chunk(cx[canopy], cy[canopy], top[canopy], cls=5))
    acc.add(_chunk([30.6], [40 - 30.6], [cone[30, 30] + 14.2], cls=5))  # the tree's 2nd
    acc.add(_chunk([5.3], [40 - 30.4], [120.0]))  # lone bird in cell (30, 5)
    acc.add(_chunk([35.5], [40 - 3.5], [top[3, 35] + 50]))  # bird over canopy cell (3, 35)
    t = default_threshold(1.0)
    assert t == 5.0 and default_threshold(10.0) == 20.0
    gmean, _ = filter_dtm(*(acc.shaped(n) for n in ("gsum", "gcount", "gmin", "gmax")), t)
    dsm, out = filter_dsm(acc.shaped("top1"), acc.shaped("top2"), t, gmean)
    assert dsm[10, 10] == pytest.approx(100.0)  # the summit
    assert dsm[30, 30] == pytest.approx(cone[30, 30] + 15.0)  # the one-cell tree
    np.testing.assert_allclose(dsm[20:22, 30:32], cone[20:22, 30:32] + 30.0, atol=1e-4)
    assert dsm[5, 33] == pytest.approx(cone[5, 33])  # the canopy gap
    assert np.isnan(dsm[30, 5]) and np.isnan(dsm[35, 35])  # lone bird, return under ground
    assert dsm[3, 35] == pytest.approx(top[3, 35], abs=1e-4)  # the canopy under the bird
    assert out.sum() == 3
    expected = np.where(canopy, top, cone)
    keep = np.ones(dsm.shape, bool)
    keep[[30, 35], [5, 35]] = False
    np.testing.assert_allclose(dsm[keep], expected[keep], atol=1e-4)


def test_nodata_is_demgens():
    from demgen.inference.scene import NODATA as SCENE_NODATA
    from demgen.pointcloud.grid import NODATA as GRID_NODATA

    assert GRID_NODATA == SCENE_NODATA == NODATA


def test_ground_outliers_are_trimmed_exactly():
    g = GridSpec(0.0, 10.0, 1.0, 10, 10, None)
    acc = Accumulator(g)
    yy, xx = np.mgrid[:10, :10]
    for k in range(3):  # three ground points per cell on a 45-degree ramp
        acc.add(_chunk((xx + 0.2 + 0.3 * k).ravel(), (10 - yy - 0.5).ravel(),
                       (50.0 + xx).ravel().astype(float), cls=2))  # fmt: skip
    acc.add(_chunk([4.5], [10 - 4.5], [10.0], cls=2))  # 40 m under cell (4, 4)
    acc.add(_chunk([7.5], [10 - 2.5], [200.0], cls=2))  # far above cell (2, 7)
    acc.add(_chunk([1.5], [10 - 8.5], [-500.0], cls=2))
    acc.gcount[8 * 10 + 1] = 1  # cell (8, 1): only the bad point
    acc.gsum[8 * 10 + 1] = -500.0
    dtm, stats = filter_dtm(*(acc.shaped(n) for n in ("gsum", "gcount", "gmin", "gmax")), 5.0)
    expected = (50.0 + xx).astype(np.float32)
    expected[8, 1] = np.nan
    np.testing.assert_allclose(dtm, expected, atol=1e-4)
    assert stats == {"trimmed": 2, "dropped": 1}


# --- the DTM fill -------------------------------------------------------------------------


def test_harmonic_fill_reproduces_planes_and_respects_the_max_gap():
    yy, xx = np.mgrid[:120, :100]
    plane = (300 + 0.4 * xx - 0.25 * yy).astype(np.float32)
    known = np.ones(plane.shape, bool)
    known[20:70, 30:90] = False  # a 50 x 60 building
    known[90:100, 5:15] = False
    f = harmonic_fill(plane, known)
    assert np.abs(f - plane).max() < 0.005
    bowl = (0.01 * (xx - 50.0) ** 2).astype(np.float32)
    fb = harmonic_fill(bowl, known)
    assert fb[~known].min() >= bowl[known].min() and fb[~known].max() <= bowl[known].max()
    reach = within_reach(known, 10)
    assert reach[20:30, 30:90].all() and not reach[45, 60] and reach[95, 10]
    assert within_reach(known, 0).sum() == known.sum()


def test_small_gaps_filled_large_gaps_stay_nodata(tmp_path):
    """Ground with a 6-cell gap (filled) and a 30-cell gap (middle nodata) at 2 m cells."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 100, 40_000)
    y = rng.uniform(0, 100, 40_000)
    keep = ~((x > 20) & (x < 32) & (y > 20) & (y < 32)) & ~((x > 40) & (x < 100) & (y > 40))
    x, y = x[keep], y[keep]
    z = 100 + 0.1 * x + 0.05 * y
    pts = {
        "x": x,
        "y": y,
        "z": z,
        "classification": np.full(len(x), 2, np.uint8),
        "return_number": np.ones(len(x), np.uint8),
        "number_of_returns": np.ones(len(x), np.uint8),
        "withheld": np.zeros(len(x), bool),
    }
    f = write_cloud(tmp_path / "g.laz", pts)
    cfg = LidarConfig(resolution=2.0, bounds=(0, 0, 100, 100), max_gap=10.0)
    s = grid_lidar([f], tmp_path / "o", cfg, progress=False)
    dtm, _ = read_raster(tmp_path / "o" / "dtm.tif")
    dtm = dtm[0]
    yy, xx = np.mgrid[:50, :50]
    truth = 100 + 0.1 * (xx * 2 + 1) + 0.05 * (100 - (yy * 2 + 1))
    ok = dtm != NODATA
    err = np.abs(dtm - truth)
    assert ok[10:16, 10:16].all() and err[10:16, 10:16].max() < 0.05  # small gap: filled, exact
    # the large gap is open to the grid's border (known on one side only): the membrane
    # levels off, 1.5 m below the ~10 % slope's plane at 10 m from ground
    assert err[ok].max() < 2.0 and np.percentile(err[ok], 90) < 0.3
    # the large gap is rows 0-29, columns 20-49: more than 5 cells (10 m) from ground, nodata
    assert not ok[:25, 25:].any() and ok[:, :25].all() and ok[25:].all()
    assert s["dtm"]["filled_cells"] > 36


# --- lidar -> prepare -> refine fit --------------------------------------------------------


def test_lidar_dsm_is_a_refinement_target(tmp_path, monkeypatch):
    from demgen.data.chips import ChipStore
    from demgen.data.prepare import PrepareConfig, prepare_rasters
    from demgen.training import fit

    scene = generate_scene(
        tmp_path / "scene",
        SceneConfig(size=192, seed=5, relief="plains", stereo=True, erosion_iterations=4),
    )
    pts = survey(scene, first_per_cell=2, hole=(slice(0, 0), slice(0, 0)))
    cloud = write_cloud(tmp_path / "survey.laz", pts)
    assert cli_main(["lidar", str(cloud), "-o", str(tmp_path / "lidar"), "--resolution", "10",
                     "-q"]) == 0  # fmt: skip
    extras = [scene / n for n in ("initial_dsm.tif", "ortho2.tif", "triangulation_error.tif")]
    cfg = PrepareConfig(chip_size=64, block=1, buffer=0.0, normalize="residual", min_blocks=2,
                        fractions=(0.6, 0.4, 0.0))  # fmt: skip
    store = prepare_rasters([scene / "image.tif"], [tmp_path / "lidar" / "dsm.tif"],
                            tmp_path / "store", cfg, extras=extras)  # fmt: skip
    st = ChipStore(store)
    assert len(st.indices("train")) > 0 and st.extras[0]["name"] == "initial_dsm"
    monkeypatch.chdir(tmp_path)
    run = fit(["--config", str(_configs() / "deepdem" / "refine_dsm.yaml"),
               "--data.store", str(store), "--data.batch_size", "2",
               "--data.init_args.num_workers", "0", "--run_root", str(tmp_path / "runs"),
               "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
               "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
               "--trainer.enable_model_summary", "false"])  # fmt: skip
    assert run is not None and list((tmp_path / "runs").rglob("*.ckpt"))


def _configs():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "configs"
