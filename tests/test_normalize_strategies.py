"""Named normalization strategies: exact round trips, fitted statistics, dispatch by name."""

import numpy as np
import pytest
import torch

from demgen.data.normalize import (
    ChipStats,
    ElevationNorm,
    GlobalShiftNorm,
    ImageNorm,
    PercentileImageNorm,
    ResidualNorm,
    ScaleImageNorm,
    ZScoreNorm,
    fit_elevation_norm,
    fit_image_norm,
    norm_from_dict,
)


@pytest.fixture
def chips():
    rng = np.random.default_rng(1)
    h = rng.normal(800, 150, size=(6, 32, 32)) + np.arange(6)[:, None, None] * 40
    valid = rng.random(h.shape) > 0.1
    stats = np.array([ChipStats.of(h[i], valid[i]) for i in range(len(h))], dtype=np.float64)
    return h, valid, ChipStats(*stats.T)


@pytest.mark.parametrize("strategy", ["global", "global-shift", "zscore", "residual"])
def test_elevation_round_trip_is_exact(chips, strategy):
    h, valid, stats = chips
    norm = fit_elevation_norm(strategy, stats, chip_size=32)
    again = norm_from_dict(norm.to_dict())
    assert again.to_dict() == norm.to_dict()
    offsets = {"min": stats.vmin, "mean": stats.mean}.get(norm.offset_stat or "")
    for i in range(len(h)):
        off = None if offsets is None else offsets[i]
        z = again.forward(h[i], off)
        np.testing.assert_allclose(again.inverse(z, off), h[i], rtol=0, atol=1e-9)
        # float32 tensors (what a model sees and returns) come back to within a millimetre
        zt = again.forward(torch.tensor(h[i], dtype=torch.float32), off)
        back = again.inverse(zt, off).double().numpy()
        np.testing.assert_allclose(back, h[i], rtol=0, atol=1e-3)


def test_statistics_match_their_definitions(chips):
    h, valid, stats = chips
    allv = h[valid]
    z = fit_elevation_norm("zscore", stats)
    assert z.mean == pytest.approx(allv.mean(), rel=1e-12)
    assert z.std == pytest.approx(allv.std(), rel=1e-9)
    g = fit_elevation_norm("global", stats)
    assert (g.vmin, g.vmax) == (allv.min(), allv.max())
    r = fit_elevation_norm("residual", stats, chip_size=32)
    assert r.gsf == pytest.approx(np.mean([h[i][valid[i]].std() for i in range(len(h))]))
    s = fit_elevation_norm("global-shift", stats)
    for i in range(len(h)):
        zi = s.forward(h[i][valid[i]], stats.vmin[i])
        assert zi.min() == pytest.approx(-1.0) and zi.max() <= 1.0 + 1e-12
    with pytest.raises(ValueError, match="offset"):
        s.forward(h[0])


def test_image_strategies_invert_and_dispatch():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 10000, (3, 16, 16)).astype(np.float64)
    samples = x.reshape(3, -1)
    for strategy in ("percentile", "scale", "band-zscore"):
        norm = fit_image_norm(strategy, samples, ["B4", "B3", "B2"], dtype="uint16")
        again = norm_from_dict(norm.to_dict())
        assert type(again) is type(norm)
        np.testing.assert_allclose(again.inverse(again.apply(x)), x, rtol=1e-12, atol=1e-9)
    p = fit_image_norm("percentile", samples, ["a", "b", "c"])
    assert isinstance(p, PercentileImageNorm)
    y = p.apply(x)
    for b in range(3):
        assert np.mean(y[b] < 0) == pytest.approx(0.02, abs=0.02)
        assert np.mean(y[b] > 1) == pytest.approx(0.02, abs=0.02)
    assert fit_image_norm("scale", samples, ["a"] * 3, dtype="uint8").scale == pytest.approx(
        1 / 255
    )
    assert isinstance(fit_image_norm("scale", samples, ["a"] * 3), ScaleImageNorm)


def test_existing_global_api_unchanged():
    norm = ElevationNorm.fit(np.array([100.0, 300.0, np.nan]))
    assert norm.to_dict() == {"vmin": 100.0, "vmax": 300.0, "strategy": "global"}
    assert norm.forward(300.0) == 1.0 and norm.inverse(-1.0) == 100.0
    assert isinstance(norm_from_dict(norm.to_dict()), ElevationNorm)
    inorm = ImageNorm(["B4"], 1e-4, [0.1], [0.05])
    assert isinstance(norm_from_dict(inorm.to_dict()), ImageNorm)
    assert isinstance(norm_from_dict(GlobalShiftNorm(5.0).to_dict()), GlobalShiftNorm)
    assert isinstance(norm_from_dict(ZScoreNorm(1.0, 2.0).to_dict()), ZScoreNorm)
    assert isinstance(norm_from_dict(ResidualNorm(3.0, 64).to_dict()), ResidualNorm)
    with pytest.raises(ValueError, match="unknown"):
        norm_from_dict({"strategy": "nope"})


def test_image_fill_is_the_documented_training_statistic():
    """Invalid image pixels take, in normalized units, each band's training mean
    (band-zscore), the midpoint of the training percentiles (percentile), or 0 (scale)."""
    from demgen.data.fill import fill_invalid, image_fill_value

    samples = np.random.default_rng(0).uniform(200, 3000, (2, 500))
    z = fit_image_norm("band-zscore", samples, ["a", "b"], dtype="uint16")
    back = z.inverse(np.full((2, 1, 1), image_fill_value(z), np.float32))[:, 0, 0]
    np.testing.assert_allclose(back, samples.mean(axis=1), rtol=1e-5)
    p = fit_image_norm("percentile", samples, ["a", "b"])
    back = p.inverse(np.full((2, 1, 1), image_fill_value(p)))[:, 0, 0]
    np.testing.assert_allclose(back, (np.array(p.lo) + np.array(p.hi)) / 2)
    assert image_fill_value(fit_image_norm("scale", samples, ["a", "b"])) == 0.0
    x = np.array([[[1.0, np.nan], [np.inf, 2.0]]], np.float32)
    ok = np.array([[[True, True], [True, False]]])
    np.testing.assert_array_equal(fill_invalid(x, ok, 0.5), [[[1.0, 0.5], [0.5, 0.5]]])
    t = fill_invalid(torch.from_numpy(x), torch.from_numpy(ok), 0.5)
    np.testing.assert_array_equal(t.numpy(), [[[1.0, 0.5], [0.5, 0.5]]])
