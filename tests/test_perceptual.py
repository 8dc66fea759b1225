"""Distribution metrics: fd_demgen_rand, and FID/KID/LPIPS on a local TorchScript net."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torchmetrics.image.kid import poly_mmd

from demgen.metrics.perceptual import (
    DemgenRandomFeatures,
    extract_features,
    fid_torchscript,
    frechet_distance,
    frechet_distance_demgen_random_features,
    frechet_distance_features,
    kid_torchscript,
    kid_unbiased,
    lpips_torchscript,
    perceptual_metrics,
)


class TinyFeatures(nn.Module):
    """A 2-layer conv net returning its feature maps (LPIPS) or pooled features (FID)."""

    def __init__(self, bands: int = 3, pooled: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(bands, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        with torch.no_grad():
            for c in (self.c1, self.c2):
                c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.3)
                c.bias.copy_(torch.randn(c.bias.shape, generator=g) * 0.1)
        self.pooled = pooled

    def forward(self, x: Tensor) -> list[Tensor]:
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        if self.pooled:
            return [b.mean(dim=(2, 3))]
        return [a, b]


def save_scripted(module: nn.Module, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated
        torch.jit.script(module).save(str(path))
    return str(path)


def image_set(seed: int, n: int = 24, bands: int = 3, size: int = 16, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.6, size=(n, bands, 1, 1))
    return np.clip(base + 0.1 * rng.standard_normal((n, bands, size, size)) + shift, 0, 1)


def test_frechet_distance_hand_computed_gaussians():
    # diagonal: |mu|^2 = 5, tr = 10, tr sqrt(S1 S2) = sqrt(4) + sqrt(4) = 4 -> 5 + 10 - 8
    fd = frechet_distance([0, 0], np.diag([1.0, 4.0]), [1, 2], np.diag([4.0, 1.0]))
    assert fd == pytest.approx(7.0, abs=1e-12)
    assert frechet_distance([0.0], [[1.0]], [0.0], [[4.0]]) == pytest.approx(1.0)  # 1+4-2*2
    # non-commuting covariances: against tr of the eigenvalue roots of S1 S2 (real, > 0)
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = 0.25 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance([0.5, 0], s1, [0, 0], s2) == pytest.approx(expected, abs=1e-12)
    assert frechet_distance([1, 2], s1, [1, 2], s1) == pytest.approx(0.0, abs=1e-12)


def test_demgen_random_features_deterministic_any_band_count():
    a, b = DemgenRandomFeatures(4), DemgenRandomFeatures(4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(DemgenRandomFeatures(3).convs[0].weight[:, :3], a.convs[0].weight[:, :3])
    assert torch.equal(DemgenRandomFeatures(3).convs[1].weight, a.convs[1].weight)
    # pinned weights: a change of architecture, seed or generator shows here
    w = a.convs[0].weight
    assert float(w.sum()) == pytest.approx(PINNED_W0_SUM_4BANDS, rel=1e-5)
    imgs = image_set(0, n=3, bands=4)
    f = extract_features(a, imgs, data_range=1.0)
    assert f.shape == (3, 128) and f.dtype == np.float64
    assert np.array_equal(f, extract_features(b, imgs, data_range=1.0))
    # data units do not matter once the range is given
    f2 = extract_features(a, imgs * 10000, data_range=10000)
    np.testing.assert_allclose(f2, f, rtol=1e-5, atol=1e-7)
    assert extract_features(DemgenRandomFeatures(1), imgs[:, 0], data_range=1.0).shape == (3, 128)


PINNED_W0_SUM_4BANDS = -3.500016927719116  # torch 2.13 CPU generator


def test_fd_demgen_rand_same_vs_shifted():
    ref = image_set(1)
    same_dist = image_set(2)
    shifted = image_set(2, shift=0.3)
    fd_self = frechet_distance_demgen_random_features(ref, ref, data_range=1.0)
    fd_same = frechet_distance_demgen_random_features(same_dist, ref, data_range=1.0)
    fd_shift = frechet_distance_demgen_random_features(shifted, ref, data_range=1.0)
    assert abs(fd_self) < 1e-6  # sqrt of rounding-level eigenvalues of a rank-24 cov
    assert fd_shift > 5 * fd_same > 0


def test_fid_kid_on_a_scripted_net(tmp_path):
    net = save_scripted(TinyFeatures(pooled=True), tmp_path / "feat.pt")
    ref, same_dist, shifted = image_set(3), image_set(4), image_set(4, shift=0.3)
    fid_self = fid_torchscript(ref, ref, net, data_range=1.0)
    fid_same = fid_torchscript(same_dist, ref, net, data_range=1.0)
    fid_shift = fid_torchscript(shifted, ref, net, data_range=1.0)
    assert abs(fid_self) < 1e-3
    assert fid_shift > 5 * fid_same
    # torchmetrics' FID equals our float64 Fréchet distance on the same features
    feats = TinyFeatures(pooled=True)
    fa = extract_features(feats, shifted, data_range=1.0)
    fb = extract_features(feats, ref, data_range=1.0)
    assert fid_shift == pytest.approx(frechet_distance_features(fa, fb), rel=1e-4)
    kid_same = kid_torchscript(same_dist, ref, net, data_range=1.0)
    kid_shift = kid_torchscript(shifted, ref, net, data_range=1.0)
    assert abs(kid_same) < 0.1 * kid_shift and kid_shift > 0
    # our unbiased MMD^2 equals torchmetrics' for equal set sizes
    tm = poly_mmd(torch.from_numpy(fa), torch.from_numpy(fb)).item()
    assert kid_unbiased(fa, fb) == pytest.approx(tm, rel=1e-9)
    assert kid_unbiased(fa[:10], fb) == pytest.approx(kid_unbiased(fa[:10], fb))  # m != n runs


def test_lpips_on_a_scripted_net(tmp_path):
    net = save_scripted(TinyFeatures(), tmp_path / "lpips.pt")
    a, b = image_set(5, n=4), image_set(6, n=4)
    assert lpips_torchscript(a, a, net, data_range=1.0) == pytest.approx(0.0, abs=1e-12)
    d_ab = lpips_torchscript(a, b, net, data_range=1.0)
    assert d_ab > 0
    assert lpips_torchscript(b, a, net, data_range=1.0) == pytest.approx(d_ab, rel=1e-12)
    near = np.clip(a + 0.01, 0, 1)
    assert 0 < lpips_torchscript(near, a, net, data_range=1.0) < d_ab


def test_perceptual_metrics_dict_and_no_torchvision(tmp_path):
    feat = save_scripted(TinyFeatures(pooled=True), tmp_path / "f.pt")
    lp = save_scripted(TinyFeatures(), tmp_path / "l.pt")
    ref, pred = image_set(7, n=6), image_set(8, n=6)
    m = perceptual_metrics(pred, ref, data_range=1.0, feature_net=feat, lpips_net=lp)
    assert set(m) == {
        "fd_demgen_rand",
        "fid_torchscript",
        "kid_torchscript",
        "feature_net",
        "lpips_torchscript",
        "lpips_net",
    }
    assert all(isinstance(m[k], float) for k in m if not k.endswith("_net"))
    assert "torchvision" not in sys.modules
    with pytest.raises(ValueError):
        perceptual_metrics([np.full((3, 8, 8), np.nan)] * 2, ref, data_range=1.0)
