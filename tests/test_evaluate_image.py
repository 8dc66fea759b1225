"""`demgen evaluate` on two images: dispatch, bands, grid, nodata, data range, metrics, report."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from rasterio.transform import from_origin
from torch import Tensor, nn

from demgen.cli import main
from demgen.errors import InputError
from demgen.evaluate import evaluate_to_folder
from demgen.evaluation_image import (
    data_range_of,
    evaluate_image,
    evaluate_image_to_folder,
    is_image_raster,
    resolve_kind,
)
from demgen.io.raster import write_raster

UTM = "EPSG:32633"
TR = from_origin(500_000, 5_200_000, 10, 10)
S2 = ["B2", "B3", "B4", "B8"]
SIZE = 128


def texture(seed: int, bands: int = 4, size: int = SIZE) -> np.ndarray:
    """Reflectance in 0..1: a smooth random field per band (box-blurred noise, stretched)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((bands, size + 8, size + 8))
    k = np.ones(9) / 9
    for axis in (1, 2):
        noise = np.apply_along_axis(lambda v: np.convolve(v, k, "valid"), axis, noise)
    lo, hi = noise.min(axis=(1, 2), keepdims=True), noise.max(axis=(1, 2), keepdims=True)
    return 0.05 + 0.6 * (noise - lo) / (hi - lo)


def scaled(img: np.ndarray) -> np.ndarray:
    return np.round(img * 10000).astype(np.uint16)


def write(path, arr, descriptions=S2, transform=TR, **kw):
    d = list(descriptions) if descriptions is not None else None
    return write_raster(path, arr, crs=UTM, transform=transform, descriptions=d, **kw)


def pair(tmp_path, pred, ref, **kw):
    return write(tmp_path / "pred.tif", pred, **kw), write(tmp_path / "ref.tif", ref, **kw)


def test_identical_images_ssim_one_psnr_null_sam_zero(tmp_path):
    img = scaled(texture(0))
    ref = write(tmp_path / "ref.tif", img)
    m = evaluate_image_to_folder(ref, ref, tmp_path / "ev")
    assert {p.name for p in (tmp_path / "ev").iterdir()} == {"metrics.json", "report.md",
                                                               "figure.png"}  # fmt: skip
    text = (tmp_path / "ev" / "metrics.json").read_text()
    saved = json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert m["psnr_db"] == math.inf and saved["psnr_db"] is None
    assert saved["ssim"] == pytest.approx(1.0, abs=1e-9) and saved["sam_deg"] == pytest.approx(0)
    assert saved["per_band"]["B8"]["psnr_db"] is None and saved["kind"] == "image"
    assert saved["data_range"] == 10000 and "reflectance x 10000" in saved["data_range_rule"]
    assert saved["fd_chips"] == 4 and abs(saved["fd_demgen_rand"]) < 1e-6
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "| PSNR | inf | dB |" in report and "| B4 |" in report


def test_additive_offset_gives_the_hand_computed_psnr(tmp_path):
    ref = texture(1)
    p, r = pair(tmp_path, scaled(ref) + np.uint16(100), scaled(ref))
    m = evaluate_image(p, r)
    assert m["psnr_db"] == pytest.approx(10 * math.log10(10000**2 / 100**2), abs=1e-9)  # 40 dB
    assert m["rmse"] == pytest.approx(100.0) and m["n_pixels"] == SIZE * SIZE
    pf, rf = pair(tmp_path / "f", (ref + 0.05).astype(np.float32), ref.astype(np.float32))
    mf = evaluate_image(pf, rf)
    assert mf["data_range"] == 1.0 and "reflectance 0..1" in mf["data_range_rule"]
    assert mf["psnr_db"] == pytest.approx(10 * math.log10(1.0 / 0.05**2), abs=1e-4)


def test_unrelated_images_score_low_and_fd_grows(tmp_path):
    p, r = pair(tmp_path, texture(2).astype(np.float32), texture(3).astype(np.float32))
    m = evaluate_image(p, r, fd_chip=16)
    assert m["ssim"] < 0.5 and m["psnr_db"] < 20.0 and m["data_range"] == 1.0
    same = evaluate_image(r, r, fd_chip=16)
    assert m["fd_chips"] == same["fd_chips"] == 64
    assert abs(same["fd_demgen_rand"]) < 1e-6 < 1e-3 < m["fd_demgen_rand"]


def test_bands_matched_by_description_in_any_order(tmp_path):
    ref, pred = scaled(texture(4)), scaled(np.clip(texture(4) + 0.1 * texture(5), 0, 1))
    r = write(tmp_path / "ref.tif", ref)
    p = write(tmp_path / "p.tif", pred)
    order = [3, 2, 0, 1]
    shuffled = write(tmp_path / "shuffled.tif", pred[order], descriptions=[S2[i] for i in order])
    a, b = evaluate_image(p, r), evaluate_image(shuffled, r)
    assert b["band_matching"] == "description" and b["bands"] == S2
    for key in ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "fd_demgen_rand", "per_band"):
        assert a[key] == b[key]
    undescribed = write(tmp_path / "u.tif", pred, descriptions=None)
    assert evaluate_image(undescribed, r)["band_matching"] == "position"


def test_band_set_mismatch_exits_2_with_one_line(tmp_path, capsys):
    img = scaled(texture(6))
    r = write(tmp_path / "ref.tif", img)
    p = write(tmp_path / "p.tif", img, descriptions=["B2", "B3", "B4", "B11"])
    assert main(["evaluate", str(p), str(r), "-o", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not match" in err and "B11" in err
    three = write(tmp_path / "three.tif", img[:3], descriptions=None)
    assert main(["evaluate", str(three), str(r), "-o", str(tmp_path / "ev")]) == 2
    assert "3 bands" in capsys.readouterr().err


def test_nodata_pixels_change_nothing(tmp_path):
    ref, pred = scaled(texture(7)), scaled(texture(8))
    ref[:, :20, :30] = 0  # declared nodata in the reference
    pred_b = pred.copy()
    pred_b[:, :20, :30] = 9999  # values under the reference's nodata
    r = write(tmp_path / "ref.tif", ref, nodata=0)
    a = evaluate_image(write(tmp_path / "a.tif", pred), r)
    b = evaluate_image(write(tmp_path / "b.tif", pred_b), r)
    assert a["n_pixels"] == SIZE * SIZE - 600
    for key in ("psnr_db", "ssim", "sam_deg", "ergas", "per_band"):
        assert a[key] == b[key]
    # uint16 declaring no nodata: 0 in every band is Sentinel-2's no-data, 0 in one band is not
    pred_c = pred.copy()
    pred_c[:, 100:, :10] = 0
    pred_c[0, :5, 100:] = 0
    c = evaluate_image(write(tmp_path / "c.tif", pred_c), r)
    assert c["n_pixels"] == SIZE * SIZE - 600 - 280
    # a mask raster drops more
    mask = np.ones((SIZE, SIZE), np.uint8)
    mask[-8:] = 0
    d = evaluate_image(write(tmp_path / "a.tif", pred), r,
                       mask=write(tmp_path / "m.tif", mask, descriptions=None))  # fmt: skip
    assert d["n_pixels"] == SIZE * SIZE - 600 - 8 * SIZE


def test_data_range_rule():
    u16, f32 = np.dtype("uint16"), np.dtype("float32")
    assert data_range_of(u16, {}, 9000.0)[0] == 10000.0
    assert data_range_of(np.dtype("uint8"), {}, 250.0)[0] == 255.0
    assert data_range_of(f32, {}, 0.8) == (1.0, "float32 values <= 2: reflectance 0..1")
    assert data_range_of(u16, {"reflectance_scale": "0.0001"}, 9000.0)[0] == 10000.0
    assert data_range_of(u16, {"reflectance_scale": "10000"}, 30000.0)[0] == 10000.0
    for dtype, top in ((f32, 500.0), (u16, 40000.0)):
        with pytest.raises(InputError, match="--data-range"):
            data_range_of(dtype, {}, top)


def test_units_must_agree_unless_the_range_is_given(tmp_path):
    ref = texture(9)
    r = write(tmp_path / "ref.tif", scaled(ref))
    p = write(tmp_path / "p.tif", ref.astype(np.float32))
    with pytest.raises(InputError, match="convert one"):
        evaluate_image(p, r)
    m = evaluate_image(p, r, data_range=10000)
    assert m["data_range"] == 10000 and m["data_range_rule"] == "given (--data-range)"


def test_finer_prediction_is_averaged_onto_the_reference_grid(tmp_path):
    ref = scaled(texture(10))
    fine = np.repeat(np.repeat(ref, 2, axis=1), 2, axis=2)
    p = write(tmp_path / "p.tif", fine, transform=from_origin(500_000, 5_200_000, 5, 5))
    m = evaluate_image(p, write(tmp_path / "r.tif", ref))
    assert m["prediction_resampling"] == "average" and m["n_pixels"] == SIZE * SIZE
    assert m["rmse"] == pytest.approx(0.0, abs=1e-6)


def test_kind_dispatch_and_a_dem_pair_stays_a_dem(tmp_path):
    y, x = np.mgrid[0:64, 0:64] * 10.0
    dem = (300 + 50 * np.sin(x / 170) * np.cos(y / 230)).astype(np.float32)
    r = write(tmp_path / "dem.tif", dem, descriptions=None, nodata=-9999.0)
    p = write(tmp_path / "pred.tif", dem + 2.0, descriptions=None)
    m = evaluate_to_folder(p, r, tmp_path / "ev")
    assert m["bias_m"] == pytest.approx(2.0, abs=1e-4) and "kind" not in m
    tta = write(tmp_path / "tta.tif", np.stack([dem, dem * 0]), descriptions=["dtm", "tta_std"],
                units=["metre", "metre"])  # fmt: skip
    img = write(tmp_path / "img.tif", scaled(texture(11, size=64)))
    assert not is_image_raster(r) and not is_image_raster(tta) and is_image_raster(img)
    single = write(tmp_path / "b4.tif", scaled(texture(11, 1, 64)), descriptions=["B4"],
                   tags={"reflectance_scale": "0.0001"})  # fmt: skip
    assert is_image_raster(single)
    with pytest.raises(InputError, match="--kind"):
        resolve_kind(img, r)
    assert resolve_kind(img, r, "dem") == "dem"
    with pytest.raises(InputError, match="for images"):
        evaluate_to_folder(p, r, tmp_path / "ev2", data_range=5.0)


class TinyFeatures(nn.Module):
    """Two conv layers returning both feature maps (FID/KID pool the last, LPIPS uses both)."""

    def __init__(self, bands: int = 4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(bands, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        with torch.no_grad():
            for c in (self.c1, self.c2):
                c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.3)
                c.bias.zero_()

    def forward(self, x: Tensor) -> list[Tensor]:
        a = torch.relu(self.c1(x))
        return [a, torch.relu(self.c2(a))]


def test_cli_summary_feature_net_and_overwrite(tmp_path, capsys):
    net = tmp_path / "feat.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyFeatures()).save(str(net))
    p, r = pair(tmp_path, scaled(texture(12)), scaled(texture(13)))
    out = tmp_path / "ev"
    args = ["evaluate", str(p), str(r), "-o", str(out), "--fd-chip", "32"]
    assert main([*args, "--feature-net", str(net), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["fd_chips"] == 16 and m["feature_net"] == str(net)
    for key in ("fd_demgen_rand", "fid_torchscript", "kid_torchscript", "lpips_torchscript"):
        assert isinstance(m[key], float), key
    assert "| LPIPS (feature net) |" in (out / "report.md").read_text()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("PSNR ") and " dB | SSIM 0." in line and " deg | ERGAS " in line
    assert "fd_demgen_rand" in line and f"over {SIZE * SIZE:,} pixels" in line
    small = evaluate_image(p, r, fd_chip=256)
    assert small["fd_demgen_rand"] is None and "fewer" not in small["fd_note"]
    assert "2 or more" in small["fd_note"]


def holey_pair(tmp_path, rows: int, cols: int, seed: int = 20, speckle: float = 0.003):
    """A 3-band uint16 pair: reference with declared-nodata holes (and a ``speckle``
    fraction of single invalid pixels), prediction with Sentinel-2-style holes (0 in every
    band, no nodata declared), a mask with more."""
    rng = np.random.default_rng(seed)
    side = max(rows, cols)
    ref = scaled(texture(seed, 3, side))[:, :rows, :cols]
    pred = np.clip(ref + rng.normal(0, 300, ref.shape), 1, 20000).astype(np.uint16)
    ref[:, 40:47, 10:60] = 0
    ref[:, rng.random((rows, cols)) < speckle] = 0
    pred[:, 150:170, 100:130] = 0
    pred[1, 5:9, 5:9] = 0  # 0 in one band only: a valid pixel
    mask = np.ones((rows, cols), np.uint8)
    mask[-3:, :] = 0
    names = S2[:3]
    r = write(tmp_path / "ref.tif", ref, descriptions=names, nodata=0)
    p = write(tmp_path / "pred.tif", pred, descriptions=names)
    m = write(tmp_path / "mask.tif", mask, descriptions=None)
    return p, r, m


def assert_close(a, b, rel=1e-9, path="m"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, float) and isinstance(b, float) and not math.isnan(b):
        assert a == pytest.approx(b, rel=rel, abs=1e-12), path
    elif isinstance(b, float) and math.isnan(b):
        assert isinstance(a, float) and math.isnan(a), path
    else:
        assert a == b, path


@pytest.mark.parametrize(("rows", "cols", "speckle"), [(300, 170, 0.003), (301, 190, 0.0)])
def test_windowed_metrics_equal_the_whole_array_ones(tmp_path, rows, cols, speckle):
    """Strips of 32, 1000 and 7 rows give image_metrics' numbers on the whole arrays
    (MS-SSIM's 5 scales need 176 px a side: the second image)."""
    from demgen.evaluation_image import complete_chips, load_image_pair
    from demgen.evaluation_image_windows import distribution_metrics
    from demgen.metrics.image import image_metrics

    p, r, mask = holey_pair(tmp_path, rows, cols, speckle=speckle)
    pair = load_image_pair(p, r, mask=mask)
    whole = image_metrics(pair.prediction, pair.reference, pair.valid,
                          data_range=pair.data_range, band_names=pair.bands)  # fmt: skip
    assert 0 < whole["valid_px"] < rows * cols - 50 * 7
    if cols < 176:
        assert whole["ms_ssim"] is None and "ms_ssim_note" in whole
    else:
        assert 0 < whole["ms_ssim"] < 1  # a number, not NaN: the coarsest scale has pixels
    fd = distribution_metrics(*complete_chips(pair, 16), data_range=pair.data_range, chip=16)
    for window_rows in (32, 1000, 7):
        m = evaluate_image(p, r, mask=mask, fd_chip=16, window_rows=window_rows)
        assert_close({k: m[k] for k in whole}, whole)
        assert m["fd_chips"] == fd["fd_chips"] > 10
        assert m["fd_demgen_rand"] == pytest.approx(fd["fd_demgen_rand"], rel=1e-6)


def test_windowed_ms_ssim_with_fewer_scales_and_the_figure_view(tmp_path):
    import rasterio

    from demgen.evaluation_grid import OnGrid
    from demgen.evaluation_image import load_image_pair
    from demgen.evaluation_image_windows import ImageReaders, band_ssim, scan
    from demgen.metrics.image import MS_SSIM_BETAS, ms_ssim

    p, r, mask = holey_pair(tmp_path, 300, 170, seed=21)
    pair = load_image_pair(p, r, mask=mask)
    zeroed = [np.where(pair.valid, a, 0.0) for a in (pair.prediction, pair.reference)]
    betas = MS_SSIM_BETAS[:3]
    want = ms_ssim(*zeroed, pair.valid, data_range=pair.data_range, betas=betas)
    with OnGrid(p, pair.grid, implicit_nodata=0) as gp, OnGrid(r, pair.grid) as gr, \
            OnGrid(mask, pair.grid, categorical=True) as gm:  # fmt: skip
        readers = ImageReaders(pair.grid, gp, gr, [1, 2, 3], [1, 2, 3], gm)
        with rasterio.Env():
            s = scan(readers, rows=50, figure_side=64)
            got = [band_ssim(readers, s, b, pair.data_range, rows=50, betas=betas)[1]
                   for b in range(3)]  # fmt: skip
    assert np.mean(got) == pytest.approx(want, rel=1e-9)
    view = s.image_view(pair.bands, pair.data_range)
    k = view.step
    assert k == 5 and view.valid.shape == (60, 34)
    assert np.array_equal(view.valid, pair.valid[::k, ::k])
    np.testing.assert_array_equal(view.reference, pair.reference[:, ::k, ::k].astype(np.float32))
