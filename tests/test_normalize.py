import numpy as np
import pytest
import torch

from demgen.data.normalize import ElevationNorm, ImageNorm


def test_elevation_global_maps_to_unit_range_and_inverts_exactly():
    h = np.array([-12.5, 0.0, 431.25, 2000.0], dtype=np.float64)
    norm = ElevationNorm.fit(h)
    z = norm.forward(h)
    assert z.min() == -1.0 and z.max() == 1.0
    np.testing.assert_allclose(norm.inverse(z), h, rtol=0, atol=1e-9)
    again = ElevationNorm.from_dict(norm.to_dict())
    assert again == norm


def test_elevation_norm_ignores_nan_and_rejects_empty():
    norm = ElevationNorm.fit(np.array([np.nan, 10.0, 20.0]))
    assert (norm.vmin, norm.vmax) == (10.0, 20.0)
    with pytest.raises(ValueError):
        ElevationNorm.fit(np.array([np.nan]))


def test_image_norm_standardizes_per_band_for_numpy_and_torch():
    rng = np.random.default_rng(1)
    pix = np.stack([rng.normal(1000, 100, 5000), rng.normal(3000, 400, 5000)])
    norm = ImageNorm.fit(pix, ["B4", "B8"])
    out = norm.apply(pix.reshape(2, 50, 100).astype(np.float32))
    np.testing.assert_allclose(out.reshape(2, -1).mean(1), 0, atol=1e-3)
    np.testing.assert_allclose(out.reshape(2, -1).std(1), 1, atol=1e-3)
    t = norm.apply(torch.from_numpy(pix.reshape(2, 50, 100).astype(np.float32)))
    np.testing.assert_allclose(t.numpy(), out, atol=1e-5)
    assert ImageNorm.from_dict(norm.to_dict()) == norm
