"""demgen download against a real STAC API on loopback (rustac serve, in memory).

Item layout served (written by the ``world`` fixture): collection ``sentinel-2-l2a`` with
Planetary-Computer-style assets B02 B03 B04 B08 (10 m) and SCL (20 m) as small COGs in
EPSG:32630, three dates in range (one with cloud over the left half and one all-cloudy
corner block, one with a cloud-shadow strip; baselines 05.09 without and with
``earthsearch:boa_offset_applied``, and 03.01), one item over the cloud limit, one after
the dates and one elsewhere; collection ``cop-dem-glo-30`` with one EPSG:4326 tile,
asset ``data``. Some assets are local paths, one date's are http:// on a Range server.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from tests.stac_fixtures import (
    RustacServer,
    file_server,
    free_port,
    proxy,
    rustac_binary,
    token_server,
)

from demgen.cli import main
from demgen.io.raster import write_cog, write_raster
from demgen.sources import masks
from demgen.sources.download import DownloadOptions, DownloadRequest, download
from demgen.sources.grid import target_grid, utm_crs
from demgen.sources.products import LANDSAT, S2, reflectance_coefficients
from demgen.sources.signing import PlanetaryComputerSigning
from demgen.sources.stac import RetryPolicy, open_client, search

pytestmark = pytest.mark.skipif(rustac_binary() is None, reason="rustac not installed (dev extra)")

BBOX = (-4.0, 40.8, -3.972, 40.821)
DATES = ("2023-06-01", "2023-06-30")
FAST = RetryPolicy(retries=3, backoff=0.01)
BANDS = ("B02", "B03", "B04", "B08")
# date, cloud cover, properties, assets over http
S2_ITEMS = [
    ("S2A_d1", "2023-06-05", 5.0, {"s2:processing_baseline": "05.09"}, False),
    ("S2B_d2", "2023-06-15", 15.0, {"s2:processing_baseline": "05.09",
                                    "earthsearch:boa_offset_applied": True}, True),
    ("S2A_d3", "2023-06-25", 2.0, {"s2:processing_baseline": "03.01"}, False),
]  # fmt: skip
OFFSETS = {"S2A_d1": -1000, "S2B_d2": 0, "S2A_d3": 0}  # in DN: -0.1 reflectance for d1


def dn(t: int, b: int, shape: tuple[int, int]) -> np.ndarray:
    """Even DNs (so medians of two are whole numbers), different per date and band."""
    r, c = np.indices(shape)
    return (2000 + 300 * b + 400 * t + 2 * ((r * 7 + c * 3 + 11 * t) % 97)).astype(np.uint16)


def scl(t: int, shape: tuple[int, int]) -> np.ndarray:
    s = np.full(shape, 4, np.uint8)  # vegetation
    h, w = shape
    if t == 0:
        s[12:20, 12:20] = 8  # cloud, medium probability (corner block)
    if t == 1:
        s[:, : w // 2] = 9  # cloud over the left half
    if t == 2:
        s[12:20, 12:20] = 10  # cirrus over the same corner block: no clear date there
        s[h - 30 : h - 24, :] = 3  # a cloud-shadow strip
    return s


def item(iid, coll, date, cc, props, geom_bbox, assets):
    w, s, e, n = geom_bbox
    p = {"datetime": f"{date}T11:00:00Z", "platform": "sentinel-2a", **props}
    if cc is not None:
        p["eo:cloud_cover"] = cc
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": coll,
        "geometry": {"type": "Polygon",
                     "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n], "properties": p, "links": [],
        "assets": {k: {"href": v, "type": "image/tiff; application=geotiff; "
                       "profile=cloud-optimized"} for k, v in assets.items()},
    }  # fmt: skip


def collection(cid):
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": cid, "description": cid,
        "license": "proprietary", "links": [],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [[None, None]]}},
    }  # fmt: skip


def dem_height(lon, lat):
    """A plane in lon/lat: bilinear resampling reproduces it exactly."""
    return 800.0 + 5000.0 * (lat - 40.8) - 3000.0 * (lon + 4.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    assets = d / "assets"
    assets.mkdir()
    grid = target_grid(BBOX, None, 10.0)
    left, top = grid.transform.c, grid.transform.f
    src_left = math.floor(left / 20) * 20 - 200
    src_top = math.ceil(top / 20) * 20 + 200
    shape = (grid.height + 40 + grid.height % 2, grid.width + 40 + grid.width % 2)
    t10 = from_origin(src_left, src_top, 10, 10)
    t20 = from_origin(src_left, src_top, 20, 20)
    files = d / "files"
    srv = file_server(assets)
    feats = []
    for t, (iid, date, cc, props, http) in enumerate(S2_ITEMS):
        hrefs = {}
        for b, name in enumerate(BANDS):
            tmp = files / f"{iid}_{name}.tif"
            write_raster(tmp, dn(t, b, shape), crs="EPSG:32630", transform=t10, nodata=0)
            write_cog(tmp, assets / f"{iid}_{name}.tif")
            hrefs[name] = f"{iid}_{name}.tif"
        tmp = files / f"{iid}_SCL.tif"
        write_raster(tmp, scl(t, (shape[0] // 2, shape[1] // 2)), crs="EPSG:32630",
                     transform=t20, nodata=0)  # fmt: skip
        write_cog(tmp, assets / f"{iid}_SCL.tif")
        hrefs["SCL"] = f"{iid}_SCL.tif"
        base = f"{srv.url}/" if http else f"{assets}/"
        feats.append(item(iid, "sentinel-2-l2a", date, cc, props, BBOX,
                          {k: base + v for k, v in hrefs.items()}))  # fmt: skip
    missing = {k: str(assets / "missing.tif") for k in (*BANDS, "SCL")}
    feats += [
        item("S2B_cloudy", "sentinel-2-l2a", "2023-06-20", 80.0, {}, BBOX, missing),
        item("S2A_late", "sentinel-2-l2a", "2023-08-01", 1.0, {}, BBOX, missing),
        item("S2A_far", "sentinel-2-l2a", "2023-06-10", 1.0, {}, (10, 50, 11, 51), missing),
    ]
    # DEM tile: EPSG:4326 at 1 arc-second around the box
    res = 1 / 3600
    w0, n0 = -4.01, 40.83
    rows, cols = np.indices((int(0.04 / res), int(0.05 / res)))
    lon = w0 + (cols + 0.5) * res
    lat = n0 - (rows + 0.5) * res
    tmp = files / "dem.tif"
    write_raster(tmp, dem_height(lon, lat).astype(np.float32), crs="EPSG:4326",
                 transform=from_origin(w0, n0, res, res))  # fmt: skip
    write_cog(tmp, assets / "dem_cog.tif")
    feats.append(item("Copernicus_DSM_COG_10_N40_00_W004_00_DEM", "cop-dem-glo-30",
                      "2021-04-22", None, {}, (w0, n0 - 0.04, w0 + 0.05, n0),
                      {"data": str(assets / "dem_cog.tif")}))  # fmt: skip
    for cid in ("sentinel-2-l2a", "cop-dem-glo-30"):
        (d / f"{cid}.json").write_text(json.dumps(collection(cid)))
    (d / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    rustac = RustacServer(
        [d / "sentinel-2-l2a.json", d / "cop-dem-glo-30.json", d / "items.json"], d / "rustac.log"
    )
    yield {"dir": d, "stac": rustac.url, "files": srv, "grid": grid,
           "src": (src_left, src_top), "shape": shape}  # fmt: skip
    rustac.stop()
    srv.stop()


def expected(world):
    """Hand-computed composite on the grid: (4, H, W) values, clear-date count, mask code."""
    g = world["grid"]
    dr = round((world["src"][1] - g.transform.f) / 10)
    dc = round((g.transform.c - world["src"][0]) / 10)
    r, c = np.indices((g.height, g.width))
    sr, sc = r + dr, c + dc
    vals, clear = [], []
    for t, (iid, *_rest) in enumerate(S2_ITEMS):
        full = np.stack([dn(t, b, world["shape"]) for b in range(4)]).astype(np.float64)
        vals.append(full[:, sr, sc] + OFFSETS[iid])
        s = scl(t, (world["shape"][0] // 2, world["shape"][1] // 2))[sr // 2, sc // 2]
        clear.append(masks.scl_mask(s) == 0)
    v = np.stack(vals)
    ok = np.stack(clear)
    v[~np.broadcast_to(ok[:, None], v.shape)] = np.nan
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            med = np.nanmedian(v, axis=0)
    return med, ok.sum(axis=0)


def req(world, **kw):
    base = dict(bbox=BBOX, dates=DATES, collections=["s2", "copdem"], stac_url=world["stac"],
                max_cloud=20.0)  # fmt: skip
    return DownloadRequest(**{**base, **kw})


@pytest.fixture(scope="module")
def downloaded(world, tmp_path_factory):
    """One download through a counting proxy, with 64-px windows (several per axis)."""
    out = tmp_path_factory.mktemp("dl") / "out"
    px = proxy(world["stac"])
    world["files"].requests.clear()
    prov = download(req(world, stac_url=px.url), out,
                    DownloadOptions(retry=FAST, progress=False, window=64))  # fmt: skip
    yield {"out": out, "prov": prov, "proxy": px, "n_asset_requests": len(world["files"].requests)}
    px.stop()


def test_search_filters_bbox_dates_and_cloud(world):
    client = open_client(world["stac"], FAST)
    res = search(client, "sentinel-2-l2a", BBOX, DATES, max_cloud=20.0)
    assert [i["id"] for i in res.items] == ["S2A_d1", "S2B_d2", "S2A_d3"]  # far/late: server
    assert res.rejected == [{"id": "S2B_cloudy", "reason": "eo:cloud_cover 80 > 20"}]
    assert res.server_query is None  # rustac's memory backend has no Query extension
    # A server declaring the Query extension gets the filter in the request body too.
    px = proxy(world["stac"], declare_query=True)
    try:
        res = search(open_client(px.url, FAST), "sentinel-2-l2a", BBOX, DATES, max_cloud=20.0)
        bodies = [json.loads(b) for m, _p, b in px.requests if m == "POST"]
    finally:
        px.stop()
    assert res.server_query == {"eo:cloud_cover": {"lte": 20.0}}
    assert bodies and all(b["query"] == {"eo:cloud_cover": {"lte": 20.0}} for b in bodies)
    assert bodies[0]["bbox"] == list(BBOX) and bodies[0]["collections"] == ["sentinel-2-l2a"]
    assert [i["id"] for i in res.items] == ["S2A_d1", "S2B_d2", "S2A_d3"]


def test_grid_is_exactly_as_asked():
    assert utm_crs(-4.0, 40.8).to_epsg() == 32630 and utm_crs(151.2, -33.9).to_epsg() == 32756
    g = target_grid(BBOX, None, 10.0)
    l, b, r, t = transform_bounds("EPSG:4326", "EPSG:32630", *BBOX, densify_pts=21)
    assert g.crs.to_epsg() == 32630
    assert (g.transform.a, g.transform.e) == (10.0, -10.0)
    assert g.transform.c == math.floor(l / 10) * 10 and g.transform.f == math.ceil(t / 10) * 10
    assert g.width == (math.ceil(r / 10) * 10 - g.transform.c) / 10
    assert g.height == (g.transform.f - math.floor(b / 10) * 10) / 10
    g2 = target_grid(BBOX, rasterio.crs.CRS.from_epsg(3035), 25.0)
    assert g2.crs.to_epsg() == 3035 and g2.transform.a == 25 and g2.transform.c % 25 == 0


def test_download_composite_masks_dem_and_provenance(world, downloaded):
    out, prov = downloaded["out"], downloaded["prov"]
    g = world["grid"]
    med, count = expected(world)
    with rasterio.open(out / "image.tif") as ds:
        assert ds.crs.to_epsg() == 32630 and ds.transform == g.transform
        assert (ds.width, ds.height) == (g.width, g.height) and ds.dtypes[0] == "uint16"
        assert ds.descriptions == ("B2", "B3", "B4", "B8") and ds.nodata == 0
        assert ds.scales == (1e-4,) * 4 and ds.offsets == (0.0,) * 4
        assert ds.tags()["reflectance_scale"] == "0.0001"
        img = ds.read()
    with rasterio.open(out / "cloud_mask.tif") as ds:
        code, clear_dates = ds.read()
    ok = count > 0
    assert (~ok).sum() > 0 and (count == 1).sum() > 0 and (count == 2).sum() > 0
    assert np.array_equal(img[:, ok], med[:, ok].astype(np.uint16))  # the hand median
    assert np.all(img[:, ~ok] == 0)
    assert np.array_equal(clear_dates, count) and np.all(code[ok] == 0)
    assert np.all(code[~ok] == masks.CLOUD)
    # the cloudy half takes the other dates: there the median is of d1 and d3 only
    left = (count == 2) & (np.arange(g.width)[None, :] < g.width // 3)
    assert left.sum() > 0
    with rasterio.open(out / "dem.tif") as ds:
        assert ds.transform == g.transform and ds.nodata == -9999 and ds.dtypes[0] == "float32"
        assert ds.tags()["vertical_crs"] == "EGM2008 height" and ds.units == ("m",)
        h = ds.read(1)
        xs, ys = ds.xy(*np.indices(h.shape))
    lon, lat = rasterio.warp.transform("EPSG:32630", "EPSG:4326", np.ravel(xs), np.ravel(ys))
    truth = dem_height(np.array(lon), np.array(lat)).reshape(h.shape)
    assert np.abs(h - truth).max() < 0.05
    s2 = prov["search"]["s2"]
    assert [i["id"] for i in s2["items"]] == ["S2A_d1", "S2B_d2", "S2A_d3"]
    assert [i["reflectance"]["offset"] for i in s2["items"]] == [-0.1, 0.0, 0.0]
    assert s2["items"][1]["assets"]["B2"].startswith("http://127.0.0.1:")
    assert prov["grid"]["width"] == g.width and set(prov["outputs"]) == {"image", "dem"}
    assert downloaded["n_asset_requests"] > 0  # the http item was read over HTTP
    json.loads((out / "provenance.json").read_text())  # strict JSON


def test_second_run_resumes_without_requests(world, downloaded):
    out, px = downloaded["out"], downloaded["proxy"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    px.requests.clear()
    world["files"].requests.clear()
    opts = DownloadOptions(retry=FAST, progress=False, window=64)
    download(req(world, stac_url=px.url), out, opts)
    assert px.requests == [] and world["files"].requests == []
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    # a lost output is redone alone: DEM only (local file), no image asset over HTTP
    os.unlink(out / "dem.tif")
    download(req(world, stac_url=px.url), out, opts)
    assert (out / "dem.tif").is_file() and world["files"].requests == [] and px.requests == []
    assert (out / "image.tif").stat().st_mtime_ns == mtimes["image.tif"]
    with pytest.raises(Exception, match="another request"):
        download(req(world, stac_url=px.url, max_cloud=10.0), out, opts)


def test_retries_injected_503_and_per_date_files(world, tmp_path):
    px = proxy(world["stac"])
    px.fail_first = 2
    world["files"].fail_first = 2
    try:
        prov = download(req(world, stac_url=px.url, composite="none", collections=["s2"]),
                        tmp_path / "o", DownloadOptions(retry=FAST, progress=False))  # fmt: skip
        statuses = len(px.requests)
    finally:
        px.stop()
        world["files"].fail_first = 0
    assert statuses > 2 and set(prov["outputs"]) == {"2023-06-05", "2023-06-15", "2023-06-25"}
    with rasterio.open(tmp_path / "o" / "2023-06-15" / "image.tif") as ds:
        img = ds.read()
    with rasterio.open(tmp_path / "o" / "2023-06-15" / "cloud_mask.tif") as ds:
        code = ds.read(1)
    assert np.all(code[:, : world["grid"].width // 3] == masks.CLOUD)
    assert np.all(img[:, code != 0] == 0) and np.all(img[:, code == 0] > 0)


def test_down_server_is_one_line_exit_2(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    rc = main(["download", str(tmp_path / "o"), "--bbox=" + ",".join(map(str, BBOX)),
               "--dates", "/".join(DATES), "--stac-url", url, "--retries", "1",
               "--backoff", "0.01", "-q"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("demgen download: error: STAC API") and "unreachable" in err
    assert not (tmp_path / "o" / "image.tif").exists()


def test_planetary_computer_signing_against_fake_token_endpoint():
    srv = token_server()
    try:
        s = PlanetaryComputerSigning(token_url=srv.url + "/token", retry=FAST)
        href = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/10/T/x/B02.tif"
        signed = s.sign(href)
        assert signed == href + "?sv=2021&se=2099-01-01&sp=rl&sig=sentinel2l2a01-sentinel2-l2"
        s.sign(href.replace("B02", "B03"))
        assert s.requests == 1 and len(srv.requests) == 1  # cached per container
        assert s.sign("https://sentinel-cogs.s3.us-west-2.amazonaws.com/a.tif").endswith("a.tif")
        assert s.sign(signed) == signed
    finally:
        srv.stop()


def test_masks_and_reflectance_coefficients():
    assert masks.scl_mask(np.arange(12)).tolist() == [3, 3, 0, 2, 0, 0, 0, 0, 1, 1, 1, 0]
    assert masks.scl_mask(np.array([11]), snow=True).tolist() == [4]
    qa = np.array([1, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7], np.uint16)
    assert masks.qa_pixel_mask(qa).tolist() == [3, 1, 1, 1, 2, 0, 0, 0]
    assert masks.qa_pixel_mask(qa, snow=True)[5] == 4
    it = {"properties": {"datetime": "2022-02-01T00:00:00Z"}}
    assert reflectance_coefficients(S2, it) == (1e-4, -0.1)  # baseline unknown, by date
    it = {"properties": {"datetime": "2021-02-01T00:00:00Z"}}
    assert reflectance_coefficients(S2, it) == (1e-4, 0.0)
    assert reflectance_coefficients(LANDSAT, it) == (2.75e-5, -0.2)


def test_prepare_reads_the_outputs_without_options(downloaded, tmp_path):
    out = downloaded["out"]
    rc = main(["prepare", "--image", str(out / "image.tif"), "--dem", str(out / "dem.tif"),
               "--cloud-mask", str(out / "cloud_mask.tif"), "-o", str(tmp_path / "store"),
               "--chip-size", "32", "-q"])  # fmt: skip
    assert rc == 0
    from demgen.data.chips import ChipStore

    store = ChipStore(tmp_path / "store")
    assert store.manifest["bands"] == ["B2", "B3", "B4", "B8"] and len(store.indices("train"))


@pytest.mark.slow
def test_download_prepare_fit_predict(downloaded, tmp_path, monkeypatch):
    """End to end: the download's files -> prepare -> fit (2 steps) -> predict."""
    from demgen.training import fit

    out = downloaded["out"]
    store = tmp_path / "store"
    assert main(["prepare", "--image", str(out / "image.tif"), "--dem", str(out / "dem.tif"),
                 "--cloud-mask", str(out / "cloud_mask.tif"), "-o", str(store),
                 "--chip-size", "32", "-q"]) == 0  # fmt: skip
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "seed_everything: 0\n"
        "trainer: {limit_train_batches: 2, limit_val_batches: 2, max_epochs: 1,\n"
        "          log_every_n_steps: 1}\n"
        "model:\n  class_path: demgen.tasks.regression.DEMRegressionTask\n"
        "  init_args: {base: 8, depth: 2, stem: 4, max_width: 32, lr: 0.002, loss: l1,\n"
        "              target: dtm, pixel_size: 10.0}\n"
        "data:\n  class_path: demgen.data.datamodule.ChipDataModule\n"
        f"  init_args: {{store: {store}, batch_size: 2, num_workers: 0, augment: false}}\n"
    )
    monkeypatch.chdir(tmp_path)
    run = fit(["--config", str(cfg), "--run_root", str(tmp_path / "runs"),
               "--trainer.enable_progress_bar", "false",
               "--trainer.enable_model_summary", "false"])  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert main(["predict", str(ckpt), str(out / "image.tif"), "-o",
                 str(tmp_path / "pred.tif"), "-q"]) == 0  # fmt: skip
    with rasterio.open(tmp_path / "pred.tif") as p, rasterio.open(out / "image.tif") as i:
        assert p.transform == i.transform and p.crs == i.crs
        assert np.isfinite(p.read(1)).any()
