import numpy as np
import pytest

from demgen.baselines import LinearBands, MeanElevation
from demgen.metrics.dem import error_stats


def test_error_stats_hand_computed():
    ref = np.array([[0.0, 10.0], [20.0, 30.0]])
    pred = np.array([[1.0, 8.0], [20.0, 34.0]])  # errors 1, -2, 0, 4
    s = error_stats(pred, ref)
    assert s["bias_m"] == pytest.approx(0.75)
    assert s["mae_m"] == pytest.approx(1.75)
    assert s["rmse_m"] == pytest.approx(np.sqrt(21 / 4))
    # median(e) = 0.5; |e - 0.5| = 0.5, 2.5, 0.5, 3.5 -> median 1.5
    assert s["nmad_m"] == pytest.approx(1.4826 * 1.5)
    assert s["le90_m"] == pytest.approx(np.percentile([1, 2, 0, 4], 90))
    assert s["r2"] == pytest.approx(1 - 21 / 500)
    assert s["n_pixels"] == 4


def test_mask_and_nan_are_excluded():
    ref = np.array([0.0, 0.0, 0.0, 0.0])
    pred = np.array([1.0, np.nan, 100.0, 1.0])
    s = error_stats(pred, ref, mask=np.array([1, 1, 0, 1], bool))
    assert s["n_pixels"] == 2 and s["mae_m"] == 1.0
    with pytest.raises(ValueError):
        error_stats(pred, ref, mask=np.zeros(4, bool))


def test_constant_offset_shifts_bias_and_mae_only():
    rng = np.random.default_rng(0)
    ref = rng.normal(500, 100, (40, 40))
    pred = ref + np.abs(rng.normal(5, 3, ref.shape)) + 0.1  # every error positive
    a, b = error_stats(pred, ref), error_stats(pred + 50.0, ref)
    assert b["bias_m"] - a["bias_m"] == pytest.approx(50.0)
    assert b["mae_m"] - a["mae_m"] == pytest.approx(50.0, abs=1e-6)  # all errors positive
    assert b["nmad_m"] == pytest.approx(a["nmad_m"])


def test_baselines():
    rng = np.random.default_rng(0)
    pix = rng.uniform(0, 5000, (1000, 4))
    h = pix @ np.array([0.1, -0.2, 0.05, 0.3]) + 42.0
    lin = LinearBands().fit(pix, h)
    image = pix.T.reshape(4, 25, 40)
    np.testing.assert_allclose(lin.predict(image), h.reshape(25, 40), rtol=1e-4)
    mean = MeanElevation().fit(h)
    assert mean.predict(image).shape == (25, 40)
    assert float(mean.predict(image)[0, 0]) == pytest.approx(h.mean(), rel=1e-6)
