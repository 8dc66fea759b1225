"""Image-quality metrics: PSNR, SSIM, MS-SSIM, SAM, ERGAS over valid pixels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from demgen.io.jsonio import dumps
from demgen.metrics.image import (
    MS_SSIM_BETAS,
    REFLECTANCE_RANGE,
    SCALED_REFLECTANCE_RANGE,
    ergas,
    image_metrics,
    ms_ssim,
    ms_ssim_min_size,
    psnr,
    reference_range,
    sam_deg,
    ssim,
)


def smooth_image(rng: np.random.Generator, bands: int = 3, size: int = 64) -> np.ndarray:
    """A natural-ish reflectance image in 0..1: smooth fields plus a little texture."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for b in range(bands):
        f = 0.4 + 0.2 * np.sin(2 * np.pi * (xx * (b + 1) + yy * 0.7)) * np.cos(3 * yy)
        out.append(f + 0.02 * rng.standard_normal((size, size)))
    return np.clip(np.stack(out), 0.0, 1.0)


def test_identical_images_ssim_one_psnr_inf_null_in_json():
    img = smooth_image(np.random.default_rng(0))
    m = image_metrics(img, img.copy(), data_range=REFLECTANCE_RANGE, band_names=["B2", "B3", "B4"])
    assert m["psnr_db"] == math.inf and isinstance(m["psnr_db"], float)
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["sam_deg"] == pytest.approx(0.0, abs=1e-5)
    assert m["ergas"] == 0.0 and m["rmse"] == 0.0
    assert set(m["per_band"]) == {"B2", "B3", "B4"}
    assert m["per_band"]["B3"]["psnr_db"] == math.inf
    assert m["per_band"]["B3"]["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["ms_ssim"] is None and "176" in m["ms_ssim_note"]  # 64 px < 5 scales
    back = json.loads(dumps(m))
    assert back["psnr_db"] is None and back["per_band"]["B2"]["psnr_db"] is None
    assert back["ssim"] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["noise", "shuffled"])
def test_unrelated_images_score_low_at_range_one(kind):
    rng = np.random.default_rng(1)
    if kind == "noise":
        a, b = rng.uniform(size=(2, 64, 64)), rng.uniform(size=(2, 64, 64))
    else:
        a = smooth_image(rng, bands=2)
        b = a.reshape(2, -1)[:, rng.permutation(64 * 64)].reshape(a.shape)
    m = image_metrics(b, a, data_range=1.0)
    assert m["ssim"] < 0.5
    assert m["psnr_db"] < 20.0


def test_wrong_data_range_is_the_ssim_regression():
    """Why the range matters: the earlier SSIM gave 0.996 to unrelated images.

    On reflectance in 0..1, C2 = (0.03 L)^2 is 9e-4 for L = 1 but 58.5 for L = 255 and
    9e4 for L = 10000: far above the local variances (~1/12), so SSIM -> 1 whatever the
    images are. Only the range of the data's unit (1.0 here) measures anything.
    """
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=(64, 64)), rng.uniform(size=(64, 64))
    assert ssim(a, b, data_range=REFLECTANCE_RANGE) < 0.1
    assert ssim(a, b, data_range=255.0) > 0.99
    assert ssim(a, b, data_range=SCALED_REFLECTANCE_RANGE) > 0.99
    # the same images in uint16 x 10000 units at range 10000 score as low as at range 1
    assert ssim(a * 1e4, b * 1e4, data_range=1e4) == pytest.approx(ssim(a, b, data_range=1.0))


def test_psnr_of_known_mse():
    ref = np.zeros((1, 4, 4))
    pred = ref.copy()
    pred[0, 0, :2] = 0.4  # two errors of 0.4 in 16 px: MSE = 0.02
    assert psnr(pred, ref, data_range=1.0) == pytest.approx(10 * math.log10(1 / 0.02))
    assert psnr(pred * 1e4, ref, data_range=1e4) == pytest.approx(10 * math.log10(1 / 0.02))
    # range 2 adds 20 log10(2) dB
    assert psnr(pred, ref, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.02))


def test_sam_of_known_spectra():
    ref = np.array([1.0, 0.0]).reshape(2, 1, 1) * np.ones((2, 3, 3))
    pred = np.array([1.0, 1.0]).reshape(2, 1, 1) * np.ones((2, 3, 3))
    assert sam_deg(pred, ref) == pytest.approx(45.0)
    assert sam_deg(2.5 * ref, ref) == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    orth = np.array([0.0, 3.0]).reshape(2, 1, 1) * np.ones((2, 3, 3))
    assert sam_deg(orth, ref) == pytest.approx(90.0)
    mixed = pred.copy()
    mixed[:, 0, 0] = [0.0, 1.0]  # one pixel at 90 deg, eight at 45
    assert sam_deg(mixed, ref) == pytest.approx((90 + 8 * 45) / 9)
    assert math.isnan(sam_deg(ref[:1], ref[:1]))  # one band: no spectrum


def test_ergas_of_known_band_errors():
    ref = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 0.5)])
    pred = ref + np.stack([np.full((4, 4), 0.02), np.full((4, 4), -0.1)])
    # RMSE/mean: 0.1 and 0.2 -> 100 sqrt((0.01 + 0.04) / 2)
    expected = 100 * math.sqrt((0.1**2 + 0.2**2) / 2)
    assert ergas(pred, ref) == pytest.approx(expected)
    assert ergas(pred, ref, resolution_ratio=0.25) == pytest.approx(expected / 4)
    m = image_metrics(pred, ref, data_range=1.0, band_names=["B2", "B3"])
    assert m["ergas"] == pytest.approx(expected)
    assert m["per_band"]["B2"]["ergas"] == pytest.approx(10.0)
    assert m["per_band"]["B3"]["ergas"] == pytest.approx(20.0)
    assert m["per_band"]["B3"]["rmse"] == pytest.approx(0.1)


def test_invalid_pixels_never_count():
    rng = np.random.default_rng(3)
    ref = smooth_image(rng, bands=3, size=48)
    pred = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1)
    valid = np.ones((48, 48), bool)
    valid[10:20, 5:30] = False
    valid[:, -3:] = False
    base = image_metrics(pred, ref, valid, data_range=1.0, ms_ssim_betas=MS_SSIM_BETAS[:2])
    for fill in (np.nan, 1e9, -5.0):
        p2, r2 = pred.copy(), ref.copy()
        p2[:, ~valid] = fill
        r2[:, ~valid] = rng.uniform(-100, 100, size=(3, int((~valid).sum())))
        again = image_metrics(p2, r2, valid, data_range=1.0, ms_ssim_betas=MS_SSIM_BETAS[:2])
        assert again == base
    assert base["valid_px"] == int(valid.sum())
    # a NaN in any band makes the pixel invalid in all bands (as if masked)
    p3 = pred.copy()
    p3[1, 10:20, 5:30] = np.nan
    p3[:, :, -3:] = np.nan
    assert image_metrics(p3, ref, data_range=1.0, ms_ssim_betas=MS_SSIM_BETAS[:2]) == base


def test_ms_ssim_sizes_and_agreement_with_torchmetrics():
    assert ms_ssim_min_size() == 176 and ms_ssim_min_size(3) == 44
    rng = np.random.default_rng(4)
    small = smooth_image(rng, bands=1, size=64)
    assert ms_ssim(small, small, data_range=1.0) is None
    assert ms_ssim(small, small, data_range=1.0, betas=MS_SSIM_BETAS[:3]) == pytest.approx(1.0)
    ref = smooth_image(rng, bands=1, size=176)
    pred = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1)
    ours = ms_ssim(pred, ref, data_range=1.0)
    theirs = multiscale_structural_similarity_index_measure(
        torch.from_numpy(pred[None]), torch.from_numpy(ref[None]), data_range=1.0, normalize="relu"
    ).item()
    assert 0.3 < ours < 1.0
    # torchmetrics crops window-radius borders at each scale, we reflect them (as SSIM does)
    assert ours == pytest.approx(theirs, abs=0.03)
    tm_ssim = structural_similarity_index_measure(
        torch.from_numpy(pred[None]), torch.from_numpy(ref[None]), data_range=1.0
    ).item()
    assert ssim(pred, ref, data_range=1.0) == pytest.approx(tm_ssim, abs=1e-3)
    noise = rng.uniform(size=(1, 176, 176))
    assert ms_ssim(noise, ref, data_range=1.0) < 0.5


def test_reference_range_for_metres_and_validation():
    dem = np.array([[100.0, 250.0], [np.nan, 900.0]])
    assert reference_range(dem) == 800.0
    assert reference_range(dem, np.array([[True, True], [True, False]])) == 150.0
    with pytest.raises(ValueError):
        image_metrics(dem, dem, data_range=None)  # the range is never implicit
    with pytest.raises(ValueError):
        image_metrics(dem, dem, data_range=1.0, band_names=["a", "b"])
