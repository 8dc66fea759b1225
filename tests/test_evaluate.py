"""DEM metrics in metres, hand-checked, and `demgen evaluate` end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from demgen.errors import InputError
from demgen.evaluate import evaluate_dem, evaluate_to_folder
from demgen.io.raster import write_raster
from demgen.metrics.dem import image_stats, slope_aspect, terrain_stats

UTM = "EPSG:32633"


def _hills(n=96, px=10.0):
    y, x = np.mgrid[0:n, 0:n] * px
    return 300 + 80 * np.sin(x / 170.0) * np.cos(y / 230.0) + 0.05 * x


def test_slope_and_aspect_of_planes():
    x = np.arange(20) * 10.0
    east_down = np.tile(-0.5 * x, (20, 1))  # falls 0.5 m per m towards the east
    slope, aspect = slope_aspect(east_down, (10.0, 10.0))
    assert np.allclose(slope, np.degrees(np.arctan(0.5)))
    assert np.allclose(aspect, 90.0)
    north_down = east_down.T[::-1]  # rows go south; this falls towards the north
    _, aspect_n = slope_aspect(north_down, (10.0, 10.0))
    assert np.allclose(np.minimum(aspect_n, 360 - aspect_n), 0.0, atol=1e-9)
    # The same heights on 2x coarser pixels are half as steep.
    slope2, _ = slope_aspect(east_down, (20.0, 20.0))
    assert np.allclose(np.tan(np.radians(slope2)), 0.25)


def test_terrain_and_image_stats_invariances():
    ref = _hills()
    same = terrain_stats(ref, ref, (10.0, 10.0))
    assert same["slope_rmse_deg"] == 0 and same["aspect_mae_deg"] == 0
    shifted = terrain_stats(ref + 50.0, ref, (10.0, 10.0))
    assert shifted["slope_rmse_deg"] == pytest.approx(0.0, abs=1e-9)
    ok = np.ones(ref.shape, bool)
    s = image_stats(ref, ref, ok)
    assert s["ssim"] == pytest.approx(1.0, abs=1e-6) and s["psnr_db"] == float("inf")
    noisy = image_stats(ref + np.random.default_rng(0).normal(0, 5, ref.shape), ref, ok)
    mse = 25.0
    rng = np.ptp(ref)
    assert noisy["psnr_db"] == pytest.approx(10 * np.log10(rng**2 / mse), abs=0.3)
    assert noisy["ssim"] < 0.99


def test_aspect_error_only_on_slopes_over_5_degrees():
    flat = np.zeros((30, 30))
    tilted = flat + np.arange(30) * 10.0 * 0.01  # 0.6 degrees: aspect undefined there
    t = terrain_stats(tilted, flat, (10.0, 10.0))
    assert t["aspect_pixels"] == 0 and np.isnan(t["aspect_mae_deg"])


@pytest.fixture
def dem_pair(tmp_path):
    ref = _hills().astype(np.float32)
    tr = from_origin(500_000, 5_200_000, 10, 10)
    ref_path = write_raster(tmp_path / "ref.tif", ref, crs=UTM, transform=tr, nodata=-9999.0)
    return ref, tr, ref_path


def test_offset_changes_bias_and_mae_exactly(tmp_path, dem_pair):
    ref, tr, ref_path = dem_pair
    pred = write_raster(tmp_path / "p.tif", ref + 7.5, crs=UTM, transform=tr)
    m = evaluate_dem(pred, ref_path)
    assert m["bias_m"] == pytest.approx(7.5, abs=1e-4) and m["mae_m"] == pytest.approx(7.5, 1e-4)
    assert m["nmad_m"] == pytest.approx(0.0, abs=1e-4)
    assert m["slope_rmse_deg"] == pytest.approx(0.0, abs=1e-4)  # float32 rounding only
    assert m["n_pixels"] == ref.size


def test_prediction_in_another_crs_is_reprojected(tmp_path, dem_pair):
    ref, tr, ref_path = dem_pair
    dst_tr, w, h = calculate_default_transform(UTM, "EPSG:4326", 96, 96, *_bounds(tr, 96))
    geo = np.full((h, w), np.nan, np.float32)
    reproject(ref, geo, src_transform=tr, src_crs=UTM, dst_transform=dst_tr,
              dst_crs="EPSG:4326", dst_nodata=np.nan, resampling=Resampling.bilinear)  # fmt: skip
    pred = write_raster(tmp_path / "geo.tif", geo, crs="EPSG:4326", transform=dst_tr,
                        nodata=np.nan)  # fmt: skip
    m = evaluate_dem(pred, ref_path)
    assert m["n_pixels"] > 0.8 * ref.size  # edges lost to two resamplings
    assert m["mae_m"] < 1.0  # a smooth surface survives the round trip


def _bounds(tr, n):
    return tr.c, tr.f - n * 10, tr.c + n * 10, tr.f


def test_mask_nodata_landcover_and_no_overlap(tmp_path, dem_pair):
    ref, tr, ref_path = dem_pair
    pred_arr = ref + 1.0
    pred_arr[:10] = -9999.0
    pred = write_raster(tmp_path / "p.tif", pred_arr, crs=UTM, transform=tr, nodata=-9999.0)
    mask = np.ones(ref.shape, np.uint8)
    mask[:, :20] = 0
    mask_path = write_raster(tmp_path / "m.tif", mask, crs=UTM, transform=tr)
    lc = (np.arange(ref.size).reshape(ref.shape) % 3 + 1).astype(np.uint8)
    classes = json.dumps({"1": "water", "2": "grass", "3": "rock"})
    lc_path = write_raster(
        tmp_path / "lc.tif", lc, crs=UTM, transform=tr, tags={"classes": classes}
    )
    m = evaluate_dem(pred, ref_path, mask=mask_path, landcover=lc_path)
    assert m["n_pixels"] == (96 - 10) * (96 - 20)
    assert m["mae_m"] == pytest.approx(1.0, abs=1e-4)
    assert set(m["per_class"]) == {"water", "grass", "rock"}
    assert sum(c["n_pixels"] for c in m["per_class"].values()) == m["n_pixels"]
    far = write_raster(tmp_path / "far.tif", ref, crs=UTM,
                       transform=from_origin(700_000, 5_200_000, 10, 10))  # fmt: skip
    with pytest.raises(InputError, match="does not overlap"):
        evaluate_dem(far, ref_path)


def test_evaluate_writes_report_and_cli_json(tmp_path, dem_pair):
    ref, tr, ref_path = dem_pair
    pred = write_raster(tmp_path / "p.tif", ref - 2.0, crs=UTM, transform=tr)
    m = evaluate_to_folder(pred, ref_path, tmp_path / "ev")
    assert {p.name for p in (tmp_path / "ev").iterdir()} == {"metrics.json", "report.md",
                                                               "figure.png"}  # fmt: skip
    assert "| MAE | 2.000 | m |" in (tmp_path / "ev" / "report.md").read_text()
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["bias_m"] == m["bias_m"]
    r = subprocess.run([sys.executable, "-m", "demgen", "evaluate", str(pred), str(ref_path),
                        "--json", "-o", str(tmp_path / "ev2")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("mae_m", "rmse_m", "bias_m", "nmad_m", "le90_m", "r2", "slope_rmse_deg"):
        assert key in out
    assert out["bias_m"] == pytest.approx(-2.0, abs=1e-4)
    r = subprocess.run([sys.executable, "-m", "demgen", "evaluate", str(pred),
                        str(tmp_path / "missing.tif")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
