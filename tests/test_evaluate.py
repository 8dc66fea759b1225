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


# --- geodesy: pixel size in metres on a geographic reference ---------------------------


def _geo_plane(lat0, direction, n=64):
    """A 10 % plane on a 1 arc-second EPSG:4326 grid whose top edge is at ``lat0``."""
    from demgen.io.geodesy import degree_lengths_m

    sec = 1 / 3600
    tr = from_origin(15.0, lat0, sec, sec)
    rows = np.arange(n)
    lat = lat0 - (rows + 0.5) * sec
    mx, my = np.array([degree_lengths_m(v) for v in lat]).T * sec  # metres per pixel, per row
    if direction == "east":
        z = 0.1 * np.arange(n)[None, :] * mx[:, None]
    else:  # north: rows go south, so heights fall row by row
        z = 0.1 * np.cumsum(np.r_[0.0, 0.5 * (my[1:] + my[:-1])])[::-1][:, None] * np.ones(n)
    return (100 + z).astype(np.float64), tr


@pytest.mark.parametrize("lat0, size", [(0.01, (30.9, 30.7)), (45.01, (21.9, 30.9))])
@pytest.mark.parametrize("direction", ["east", "north"])
def test_geographic_reference_uses_metres(tmp_path, lat0, size, direction):
    z, tr = _geo_plane(lat0, direction)
    ref = write_raster(tmp_path / "ref.tif", z, crs="EPSG:4326", transform=tr)
    pred = write_raster(tmp_path / "p.tif", z + 1.0, crs="EPSG:4326", transform=tr)
    m = evaluate_dem(pred, ref)
    assert m["slope_mean_ref_deg"] == pytest.approx(np.degrees(np.arctan(0.1)), abs=0.05)
    assert m["slope_mean_ref_deg"] == pytest.approx(5.71, abs=0.05)
    assert m["slope_mean_pred_deg"] == pytest.approx(m["slope_mean_ref_deg"], abs=1e-6)
    assert m["pixel_size_m"] == pytest.approx(list(size), abs=0.05)
    assert m["hillshade_ssim"] == pytest.approx(1.0, abs=1e-6)


# --- vertical datum -----------------------------------------------------------------


def test_vertical_datums_recorded_and_mismatch_warned(tmp_path, dem_pair):
    ref, tr, _ = dem_pair
    egm08 = write_raster(tmp_path / "r08.tif", ref, crs=UTM, transform=tr,
                         tags={"vertical_crs": "EGM2008 height"})  # fmt: skip
    egm96 = write_raster(tmp_path / "p96.tif", ref + 1, crs=UTM, transform=tr,
                         tags={"vertical_crs": "EGM96 height"})  # fmt: skip
    plain = write_raster(tmp_path / "p.tif", ref + 1, crs=UTM, transform=tr)
    m = evaluate_dem(egm96, egm08)
    assert m["vertical_crs"] == {"prediction": "EGM96 height", "reference": "EGM2008 height"}
    assert len(m["warnings"]) == 1 and "EGM96" in m["warnings"][0]
    quiet = evaluate_dem(plain, egm08)  # one side unknown: nothing to compare
    assert quiet["vertical_crs"]["prediction"] == "unknown" and quiet["warnings"] == []
    r = _cli("evaluate", egm96, egm08, "-o", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("demgen evaluate: warning: ")
    assert "**Warning:**" in (tmp_path / "ev" / "report.md").read_text()
    r = _cli("evaluate", egm08, egm08, "-o", tmp_path / "ev2")
    assert r.returncode == 0 and "warning" not in r.stderr


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "demgen", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


# --- SSIM: a scalar data range, nothing clamped ----------------------------------------


def _hand_ssim(x, y, data_range):
    """SSIM by its definition, pixel by pixel: Gaussian window 11 px, sigma 1.5, reflected
    borders, population moments (Wang et al. 2004; torchmetrics' conventions)."""
    d = np.arange(11) - 5.0
    g = np.exp(-0.5 * (d / 1.5) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    xp, yp = np.pad(x, 5, mode="reflect"), np.pad(y, 5, mode="reflect")
    vals = []
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            a, b = xp[i : i + 11, j : j + 11], yp[i : i + 11, j : j + 11]
            mx, my = (w * a).sum(), (w * b).sum()
            vx, vy = (w * a * a).sum() - mx**2, (w * b * b).sum() - my**2
            cxy = (w * a * b).sum() - mx * my
            vals.append((2 * mx * my + c1) * (2 * cxy + c2)
                        / ((mx**2 + my**2 + c1) * (vx + vy + c2)))  # fmt: skip
    return float(np.mean(vals))


def test_ssim_does_not_clamp_an_overshooting_prediction():
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    from demgen.metrics.dem import masked_ssim

    def clamped(pred, ref):  # what evaluate used to report: both clipped into [0, 100]
        t = [torch.from_numpy(a)[None, None] for a in (pred, ref)]
        return float(tm_ssim(*t, data_range=(0.0, 100.0)))

    rng = np.random.default_rng(3)
    ref = np.linspace(0, 100, 14 * 13).reshape(14, 13) + rng.normal(0, 2, (14, 13))
    ref = (ref - ref.min()) / np.ptp(ref) * 100  # exactly [0, 100]
    ok = np.ones(ref.shape, bool)
    pred = ref * 1.5  # overshoots the range by half: scored as it is, not clipped
    ours = masked_ssim(pred, ref, ok, 100.0)
    assert ours == pytest.approx(_hand_ssim(pred, ref, 100.0), rel=1e-9)
    assert abs(ours - clamped(pred, ref)) > 0.1  # clipping changed the score
    assert image_stats(pred, ref, ok)["ssim"] == pytest.approx(ours, rel=1e-12)
    # spikes far above the range: clipping hid most of them
    spikes = np.where(rng.random(ref.shape) < 0.1, ref + 300.0, ref)
    ours = masked_ssim(spikes, ref, ok, 100.0)
    assert ours == pytest.approx(_hand_ssim(spikes, ref, 100.0), rel=1e-9)
    assert ours < clamped(spikes, ref) - 0.3


# --- strict JSON, and no silent overwrite ----------------------------------------------


def _strict(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_identical_rasters_give_strict_json(tmp_path, dem_pair):
    _, _, ref_path = dem_pair
    m = evaluate_to_folder(ref_path, ref_path, tmp_path / "ev")
    assert m["psnr_db"] == float("inf")  # in Python: the honest value
    saved = _strict((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["psnr_db"] is None and saved["mae_m"] == 0.0
    assert "| PSNR | inf | dB |" in (tmp_path / "ev" / "report.md").read_text()
    r = _cli("evaluate", ref_path, ref_path, "--json", "-o", tmp_path / "ev2")
    assert r.returncode == 0, r.stderr
    assert _strict(r.stdout)["psnr_db"] is None


def test_existing_report_folder_needs_overwrite(tmp_path, dem_pair):
    ref, tr, ref_path = dem_pair
    pred = write_raster(tmp_path / "p.tif", ref + 1.0, crs=UTM, transform=tr)
    out = tmp_path / "ev"
    out.mkdir()
    _cli("evaluate", pred, ref_path, "-o", out)  # an empty folder is fine
    assert (out / "metrics.json").exists()
    (out / "metrics.json").write_text("{}")
    r = _cli("evaluate", pred, ref_path, "-o", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--overwrite" in r.stderr
    assert (out / "metrics.json").read_text() == "{}"  # untouched
    with pytest.raises(InputError, match="not empty"):
        evaluate_to_folder(pred, ref_path, out)
    r = _cli("evaluate", pred, ref_path, "-o", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metrics.json").read_text())["mae_m"] == pytest.approx(1.0, 1e-4)


# --- a finer prediction is averaged onto the coarser reference -------------------------


def test_finer_prediction_is_block_averaged(tmp_path):
    from demgen.evaluate import load_pair

    rng = np.random.default_rng(1)
    fine = rng.normal(500, 30, (200, 240))  # 1 m pixels, pure high-frequency content
    fine += 10 * ((np.indices(fine.shape).sum(0) % 2) * 2 - 1)  # and a 1 m checkerboard
    blocks = fine.reshape(20, 10, 24, 10).mean(axis=(1, 3))
    pred = write_raster(tmp_path / "fine.tif", fine.astype(np.float32), crs=UTM,
                        transform=from_origin(500_000, 5_200_000, 1, 1))  # fmt: skip
    ref = write_raster(tmp_path / "coarse.tif", blocks.astype(np.float32), crs=UTM,
                       transform=from_origin(500_000, 5_200_000, 10, 10))  # fmt: skip
    pair = load_pair(pred, ref)
    np.testing.assert_allclose(pair.prediction, blocks, atol=1e-3)
    m = evaluate_dem(pred, ref)
    assert m["prediction_resampling"] == "average"
    assert m["n_pixels"] == blocks.size and m["mae_m"] < 1e-3
    # same pixel size, another extent: bilinear, exact on an aligned grid
    same = write_raster(tmp_path / "same.tif", blocks[:, 5:].astype(np.float32), crs=UTM,
                        transform=from_origin(500_000 + 50, 5_200_000, 10, 10))  # fmt: skip
    m = evaluate_dem(same, ref)
    assert m["prediction_resampling"] == "bilinear" and m["mae_m"] < 1e-4
    assert m["n_pixels"] == blocks[:, 5:].size


# --- windowed evaluation equals the whole-array metrics --------------------------------


def _close(a, b, key):
    if isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), key
    else:
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), key


def test_windowed_metrics_equal_whole_array_metrics(tmp_path):
    from demgen.evaluate import load_pair, pair_metrics

    n = 90
    tr = from_origin(500_000, 5_200_000, 10, 10)
    ref = _hills(n).astype(np.float32)
    ref[40:44, 10:30] = -9999.0  # nodata holes in the reference
    ref[0, :5] = -9999.0
    ref_path = write_raster(tmp_path / "ref.tif", ref, crs=UTM, transform=tr, nodata=-9999.0)
    # the prediction: other heights, in EPSG:4326, with its own holes
    noisy = (_hills(n) + np.random.default_rng(2).normal(0, 3, (n, n)) + 1.5).astype(np.float32)
    dst_tr, w, h = calculate_default_transform(UTM, "EPSG:4326", n, n, *_bounds(tr, n))
    geo = np.full((h, w), np.nan, np.float32)
    reproject(noisy, geo, src_transform=tr, src_crs=UTM, dst_transform=dst_tr,
              dst_crs="EPSG:4326", dst_nodata=np.nan, resampling=Resampling.bilinear)  # fmt: skip
    geo[h // 2 : h // 2 + 6, w // 3 : w // 3 + 9] = np.nan
    pred = write_raster(tmp_path / "geo.tif", geo, crs="EPSG:4326", transform=dst_tr,
                        nodata=np.nan)  # fmt: skip
    mask = np.ones((n, n), np.uint8)
    mask[60:, 70:] = 0
    mask_path = write_raster(tmp_path / "m.tif", mask, crs=UTM, transform=tr)
    lc = ((np.arange(n * n).reshape(n, n) // 7) % 3 + 1).astype(np.uint8)
    lc_path = write_raster(tmp_path / "lc.tif", lc, crs=UTM, transform=tr,
                           tags={"classes": json.dumps({"1": "water", "2": "grass"})})  # fmt: skip

    whole = pair_metrics(load_pair(pred, ref_path, mask=mask_path))
    one = evaluate_dem(pred, ref_path, mask=mask_path, landcover=lc_path, window_rows=10_000)
    tiny = evaluate_dem(pred, ref_path, mask=mask_path, landcover=lc_path, window_rows=7)
    assert one["prediction_resampling"] == "bilinear"
    assert 0.6 * n * n < whole["n_pixels"] < n * n
    for key, value in whole.items():
        if isinstance(value, (int, float)):
            _close(one[key], value, key)
            _close(tiny[key], value, key)
    for key in ("nmad_m", "le90_m", "n_pixels", "aspect_pixels"):
        assert tiny[key] == one[key] == whole[key], key
    assert set(tiny["per_class"]) == {"water", "grass", "3"}
    for name, stats in one["per_class"].items():
        for key, value in stats.items():
            _close(tiny["per_class"][name][key], value, f"{name}.{key}")
        assert tiny["per_class"][name]["nmad_m"] == stats["nmad_m"]
    assert sum(c["n_pixels"] for c in tiny["per_class"].values()) == tiny["n_pixels"]


def test_windowed_metrics_on_a_geographic_grid(tmp_path):
    z, tr = _geo_plane(45.01, "east", n=60)
    z = z + 20 * np.sin(np.arange(60) / 5.0)[:, None] * np.cos(np.arange(60) / 7.0)
    ref = write_raster(tmp_path / "ref.tif", z, crs="EPSG:4326", transform=tr)
    pred = write_raster(tmp_path / "p.tif", z + np.random.default_rng(0).normal(0, 1, z.shape),
                        crs="EPSG:4326", transform=tr)  # fmt: skip
    one = evaluate_dem(pred, ref, window_rows=1000)
    tiny = evaluate_dem(pred, ref, window_rows=5)
    for key in ("mae_m", "slope_rmse_deg", "slope_mean_ref_deg", "aspect_mae_deg", "ssim",
                "hillshade_ssim"):  # fmt: skip
        _close(tiny[key], one[key], key)
    assert tiny["nmad_m"] == one["nmad_m"] and tiny["le90_m"] == one["le90_m"]


def test_figure_is_decimated_block_means():
    from demgen.evaluation_windows import Decimated

    a = np.arange(35 * 22, dtype=float).reshape(35, 22)
    a[3, 4] = np.nan
    dec = Decimated(35, 22, side=10)  # factor 4
    for r0 in range(0, 35, 6):  # strips that do not align with the blocks
        dec.add(r0, a[r0 : r0 + 6], a[r0 : r0 + 6] * 2)
    p, r = dec.arrays()
    assert dec.factor == 4 and p.shape == (9, 6)
    assert p[0, 1] == pytest.approx(np.nanmean(a[0:4, 4:8]))
    assert p[-1, -1] == pytest.approx(np.nanmean(a[32:, 20:]))
    np.testing.assert_allclose(r, 2 * p)
