"""`demgen view`: the offline 3D page, its data, decimation, legend and input errors."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from demgen.cli import main
from demgen.io.raster import write_raster
from demgen.viz.viewer import Grid, drape_image, render_view

UTM = "EPSG:32633"
REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _dem(path, h=60, w=50, nodata=None, holes=False, crs=UTM, offset=100.0):
    yy, xx = np.mgrid[0:h, 0:w]
    z = (offset + 2.0 * xx + 0.5 * yy).astype(np.float32)
    if holes:
        z[10:14, 10:14] = -9999.0 if nodata is None else nodata
        z[30, 30] = np.nan
    write_raster(path, z, crs=crs, transform=from_origin(500_000, 5_200_000, 10, 10), nodata=nodata)
    return path, z


def _page_data(path: Path) -> dict:
    text = path.read_text()
    m = re.search(r'<script type="application/json" id="demgen-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def _heights(view: dict, data: dict) -> np.ndarray:
    raw = base64.b64decode(view["heights"])
    return np.frombuffer(raw, dtype="<f4").reshape(data["ny"], data["nx"])


def test_page_is_offline_and_legend_matches_dem(tmp_path, image_file):
    dem, z = _dem(tmp_path / "dem.tif", 96, 80)
    out = tmp_path / "view.html"
    info = render_view(dem, out, images=[image_file])
    text = out.read_text()
    # No network at view time: no external scripts, styles, images or fetches.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"""import\s*\(?\s*["']https?://""", text)
    assert all("src=" not in tag for tag in re.findall(r"<script[^>]*>", text))
    page_code = text.split('id="demgen-data"')[1].split("</script>", 1)[1]
    assert "http" not in page_code and "fetch(" not in page_code
    assert "WebGLRenderer" in text and "OrbitControls" in text  # three.js is inlined
    assert info.layers == ["image", "hillshade", "relief"]
    lo = float(re.search(r'id="legend-min" data-metres="([^"]+)"', text).group(1))
    hi = float(re.search(r'id="legend-max" data-metres="([^"]+)"', text).group(1))
    assert lo == pytest.approx(float(z.min())) and hi == pytest.approx(float(z.max()))
    assert "height (m)" in text and f"{z.max():,.1f} m" in text
    data = _page_data(out)
    assert (data["ny"], data["nx"]) == (96, 80)
    np.testing.assert_allclose(_heights(data["views"][0], data), z, atol=1e-4)
    assert data["views"][0]["textures"]["image"].startswith("data:image/png;base64,")
    assert "full resolution" in text


def test_large_dem_is_decimated_and_says_so(tmp_path):
    dem, z = _dem(tmp_path / "dem.tif", 300, 200)
    out = tmp_path / "view.html"
    info = render_view(dem, out, max_vertices=64, max_texture=128)
    data = _page_data(out)
    assert max(data["nx"], data["ny"]) == 64 and (data["ny"], data["nx"]) == info.mesh_shape
    assert info.mesh_shape == (64, 43)
    assert info.decimation == pytest.approx(300 / 64)
    text = out.read_text()
    assert "Mesh 43 x 64 vertices, decimated 4.7x from 200 x 300 px" in text
    # Block averages of a plane stay on the plane and inside the range.
    h = _heights(data["views"][0], data)
    assert z.min() <= h.min() and h.max() <= z.max()
    assert info.layers == ["hillshade", "relief"]
    assert data["default_layer"] == "relief"


@pytest.mark.parametrize("nodata", [None, -32768.0])
def test_nodata_never_becomes_spikes(tmp_path, nodata):
    dem, z = _dem(tmp_path / "dem.tif", 40, 40, nodata=nodata, holes=True)
    out = tmp_path / "view.html"
    info = render_view(dem, out)
    valid = z[np.isfinite(z) & (z != -9999) & (z != (nodata or -9999))]
    assert info.height_min == pytest.approx(valid.min())
    data = _page_data(out)
    h = _heights(data["views"][0], data)
    assert np.isfinite(h).all()
    assert h.min() >= valid.min() - 1e-3 and h.max() <= valid.max() + 1e-3


def test_compare_shares_range_and_grid(tmp_path):
    dem, z = _dem(tmp_path / "pred.tif", 40, 30)
    ref, zr = _dem(tmp_path / "ref.tif", 40, 30, offset=150.0)
    out = tmp_path / "view.html"
    info = render_view(dem, out, compare=ref)
    data = _page_data(out)
    assert len(data["views"]) == 2
    assert info.height_min == pytest.approx(z.min()) and info.height_max == pytest.approx(zr.max())
    np.testing.assert_allclose(_heights(data["views"][1], data), zr, atol=1e-3)


def test_drape_reprojects_image_onto_dem_grid(tmp_path):
    # Image in geographic coordinates over a UTM DEM: reprojected, stretched to [0, 1].
    from rasterio.warp import transform_bounds

    grid = Grid(
        crs=__import__("rasterio").crs.CRS.from_user_input(UTM),
        transform=from_origin(500_000, 5_200_000, 10, 10),
        height=50,
        width=40,
    )
    w, s, e, n = transform_bounds(UTM, "EPSG:4326", *grid.bounds)
    img = np.zeros((3, 60, 60), np.uint16)
    img[0] = np.linspace(0, 1000, 60)[None, :]  # red increases to the east
    img[1] = 500
    img[2] = np.linspace(0, 1000, 60)[:, None]  # blue increases to the south
    pad = 0.2 * (e - w)
    tf = from_origin(w - pad, n + pad, (e - w + 2 * pad) / 60, (n - s + 2 * pad) / 60)
    path = tmp_path / "geo.tif"
    write_raster(path, img, crs="EPSG:4326", transform=tf)
    rgb = drape_image([path], grid, bands=[1, 2, 3])
    assert rgb.shape == (50, 40, 3) and np.isfinite(rgb).all()
    assert rgb[:, -5:, 0].mean() > rgb[:, :5, 0].mean() + 0.3
    assert rgb[-5:, :, 2].mean() > rgb[:5, :, 2].mean() + 0.3


def test_three_single_band_files_in_rgb_order(tmp_path):
    dem, _ = _dem(tmp_path / "dem.tif", 30, 30)
    tf = from_origin(500_000, 5_200_000, 10, 10)
    paths = []
    for i, v in enumerate((200, 100, 0)):
        a = np.full((30, 30), v, np.uint8)
        a[0, 0], a[-1, -1] = 0, 250  # give each band a spread to stretch
        a[5:25, 5:25] = v
        p = tmp_path / f"b{i}.tif"
        write_raster(p, a, crs=UTM, transform=tf, nodata=255)
        paths.append(p)
    grid = Grid(__import__("rasterio").crs.CRS.from_user_input(UTM), tf, 30, 30)
    rgb = drape_image(paths, grid)
    c = rgb[15, 15]
    assert c[0] > c[1] > c[2] or (c[0] >= c[1] >= c[2])


def test_cli_view_and_errors(tmp_path, image_file, capsys):
    dem, _ = _dem(tmp_path / "dem.tif", 96, 80)
    out = tmp_path / "v.html"
    assert (
        main(["view", str(dem), "--image", str(image_file), "--bands", "3,2,1", "-o", str(out)])
        == 0
    )
    assert "wrote" in capsys.readouterr().out and out.exists()
    # Refuses to overwrite; --overwrite replaces.
    assert main(["view", str(dem), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["view", str(dem), "-o", str(out), "--overwrite"]) == 0
    capsys.readouterr()

    def fails(argv, msg):
        target = tmp_path / "bad.html"
        assert main(["view", *argv, "-o", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
        assert not target.exists()
        assert not list(tmp_path.glob(".bad.html*"))

    fails([str(tmp_path / "missing.tif")], "no such file")
    nocrs = tmp_path / "nocrs.tif"
    write_raster(nocrs, np.ones((8, 8), np.float32), crs=None, transform=from_origin(10, 20, 1, 1))
    fails([str(nocrs)], "no CRS")
    far = tmp_path / "far.tif"
    write_raster(
        far,
        np.ones((3, 8, 8), np.uint16),
        crs=UTM,
        transform=from_origin(900_000, 1_000_000, 10, 10),
    )
    fails([str(dem), "--image", str(far)], "does not overlap")
    fails([str(dem), "--image", str(image_file), "--bands", "9,2,1"], "band 9 does not exist")
    fails([str(dem), "--image", str(image_file), str(image_file)], "three one-band files")


def test_real_landsat_dem_with_bands_321(tmp_path):
    dem = REAL / "amazon_landsat5_srtm_dem.tif"
    if not dem.exists():
        pytest.skip(f"real samples not present ({REAL})")
    bands = [REAL / f"LT52240631988227CUB02_B{b}.TIF" for b in (3, 2, 1)]
    out = tmp_path / "amazon.html"
    assert main(["view", str(dem), "--image", *map(str, bands), "-o", str(out)]) == 0
    data = _page_data(out)
    assert data["zmin"] == pytest.approx(62.0) and data["zmax"] == pytest.approx(197.0)
    assert (data["ny"], data["nx"]) == (310, 287)
    assert data["layers"] == ["image", "hillshade", "relief"]


def test_grid_pixel_size_is_wgs84_at_the_centre_latitude():
    from rasterio.crs import CRS

    # a 1 arc-second grid centred on 45 N: 21.90 x 30.87 m on the WGS84 ellipsoid (the old
    # 111,320 cos(lat) x 110,574 m formula gave 21.87 x 30.72 m: slopes 0.5 % too steep)
    g = Grid(CRS.from_epsg(4326), from_origin(10.0, 45.0 + 32 / 3600, 1 / 3600, 1 / 3600), 64, 64)
    assert g.pixel_size_m() == pytest.approx((21.90, 30.87), abs=0.01)
    assert Grid(CRS.from_epsg(2277), from_origin(0, 0, 10, 10), 8, 8).pixel_size_m() == (
        pytest.approx(3.048006, rel=1e-6), pytest.approx(3.048006, rel=1e-6))  # fmt: skip


def test_embedded_data_is_strict_json():
    from demgen.viz.viewer import _json_for_script

    text = _json_for_script({"range": [float("nan"), float("inf")], "tag": "</script>"})
    data = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert data == {"range": [None, None], "tag": "</script>"} and "</" not in text
