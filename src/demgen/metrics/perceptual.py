"""Distribution and perceptual metrics without downloads.

* ``fd_demgen_rand``: the Fréchet distance between the feature distributions of two image
  sets, the features being those of :class:`DemgenRandomFeatures`, a small conv net with
  a fixed architecture whose weights are drawn from a fixed seed. It is *not* Inception
  FID (no ImageNet weights, any band count): compare its values only with themselves.
* FID, KID and LPIPS on a feature network the user supplies as a local TorchScript file
  (``torch.jit.save``). FID goes through torchmetrics' ``FrechetInceptionDistance``
  (``feature=`` a module: no torch-fidelity needed); KID is the unbiased MMD^2 on all
  samples (torchmetrics' ``KernelInceptionDistance`` draws random subsets); LPIPS is the
  formula of Zhang et al. 2018 (torchmetrics' LPIPS needs torchvision backbones).

Images are (bands, H, W) float arrays in data units, given as a sequence or an (N, bands,
H, W) array; every network receives float32 (N, bands, H, W) divided by ``data_range``
(so reflectance 0..1 at range 1 and uint16 x 10000 at range 10000 give the same
features). Inputs must be finite: cut complete chips (the nets cannot skip invalid
pixels). Nothing here imports torchvision or downloads weights.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

SEED = 20240613
WIDTHS = (16, 32, 64, 128)  # channels of the 4 conv layers: the feature dimension is 128


class DemgenRandomFeatures(nn.Module):
    """4 conv layers (3 x 3, stride 2, padding 1, ReLU; widths 16, 32, 64, 128) and a
    global average pool: (N, bands, H, W) -> (N, 128) features.

    Weights are N(0, 2 / fan_in) (He init), biases 0, drawn on the CPU in float32 from
    ``torch.Generator`` seeds: the first layer from ``SEED + bands`` (one deterministic
    first layer per band count), the others from ``SEED``. Same seed, same torch -> the
    same weights on every machine (features equal to float32 rounding).
    """

    def __init__(self, bands: int, seed: int = SEED):
        super().__init__()
        self.bands = bands
        self.num_features = WIDTHS[-1]
        chans = (bands, *WIDTHS)
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1) for i in range(4)
        )
        g_first = torch.Generator(device="cpu").manual_seed(seed + bands)
        g_rest = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            for i, conv in enumerate(self.convs):
                g = g_first if i == 0 else g_rest
                fan_in = conv.in_channels * 9
                w = torch.randn(conv.weight.shape, generator=g, dtype=torch.float32)
                conv.weight.copy_(w * math.sqrt(2.0 / fan_in))
                conv.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x.mean(dim=(2, 3))


def _batches(images, data_range: float, batch_size: int = 16) -> Iterator[Tensor]:
    """float32 tensors (n, bands, H, W) / data_range of consecutive same-shape images."""
    if data_range is None or not data_range > 0:
        raise ValueError(f"data_range must be a positive scalar, got {data_range!r}")
    items = [np.asarray(im, np.float32) for im in images]
    items = [im[None] if im.ndim == 2 else im for im in items]
    i = 0
    while i < len(items):
        j = i + 1
        while j < len(items) and j - i < batch_size and items[j].shape == items[i].shape:
            j += 1
        batch = np.stack(items[i:j])
        if not np.isfinite(batch).all():
            raise ValueError("images must be finite: cut complete chips for these metrics")
        yield torch.from_numpy(batch / np.float32(data_range))
        i = j


def _flat_features(out) -> Tensor:
    """(N, D) from a net's output: a list/tuple uses its last element, maps are pooled."""
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if out.dim() == 4:
        out = out.mean(dim=(2, 3))
    return out.reshape(out.shape[0], -1)


@torch.no_grad()
def extract_features(net: nn.Module, images, data_range: float) -> np.ndarray:
    """(N, D) float64 features of ``images`` (see the module docstring for the input)."""
    feats = [_flat_features(net(x)).double() for x in _batches(images, data_range)]
    return torch.cat(feats).numpy()


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix by eigen-decomposition (negative eigenvalues
    from rounding are set to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein^2) distance of two Gaussians (Dowson & Landau 1982; the FID
    formula of Heusel et al. 2017), in float64:

        FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)),

    with tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)) computed from the
    eigenvalues of that symmetric PSD matrix (no scipy; no complex roots).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (N - 1)-normalised covariance of (N, D) features, float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) features, got {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance of the Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def frechet_distance_demgen_random_features(
    pred_images, ref_images, *, data_range: float, seed: int = SEED
) -> float:
    """``fd_demgen_rand``: Fréchet distance on :class:`DemgenRandomFeatures` features.

    Both sets need >= 2 images with the same band count. Not comparable with Inception
    FID; the value depends on set size (bias ~ 1/N), so compare sets of equal size.
    """
    pred = list(pred_images)
    bands = np.asarray(pred[0]).shape[0] if np.asarray(pred[0]).ndim == 3 else 1
    net = DemgenRandomFeatures(bands, seed)
    return frechet_distance_features(
        extract_features(net, pred, data_range), extract_features(net, ref_images, data_range)
    )


def load_feature_net(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """A local TorchScript module (``torch.jit.save``), on the CPU, in eval mode (torch's
    deprecation warning for ``torch.jit.load`` is silenced: TorchScript is the format)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.load(os.fspath(path), map_location="cpu")
    net.eval()
    return net


class _TorchmetricsFeatures(nn.Module):
    """A feature net seen by torchmetrics: (N, D) output and a ``num_features`` attribute
    (so torchmetrics does not probe it with a 3 x 299 x 299 uint8 image)."""

    def __init__(self, net: nn.Module, num_features: int):
        super().__init__()
        self.net = net
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return _flat_features(self.net(x))


@torch.no_grad()
def fid_torchscript(pred_images, ref_images, net_path, *, data_range: float) -> float:
    """FID (Heusel et al. 2017) on the features of a user's TorchScript net, through
    torchmetrics' ``FrechetInceptionDistance(feature=module)``. The net maps (N, bands,
    H, W) to (N, D) features (or maps, pooled; or a list, the last element used). The
    value is Inception FID only if the file is the Inception network."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    net = load_feature_net(net_path)
    pred, ref = list(_batches(pred_images, data_range)), list(_batches(ref_images, data_range))
    dim = _flat_features(net(ref[0][:1])).shape[1]
    fid = FrechetInceptionDistance(feature=_TorchmetricsFeatures(net, dim), normalize=False)
    for x in ref:
        fid.update(x, real=True)
    for x in pred:
        fid.update(x, real=False)
    return float(fid.compute())


def kid_unbiased(f1: np.ndarray, f2: np.ndarray, degree: int = 3, coef: float = 1.0) -> float:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD^2 of two
    feature sets (sizes m, n >= 2) with the kernel k(x, y) = (x . y / d + coef)^degree:

        MMD^2 = sum_{i!=j} k(x_i, x_j) / (m (m - 1)) + sum_{i!=j} k(y_i, y_j) / (n (n - 1))
                - 2 sum_{i,j} k(x_i, y_j) / (m n)

    on all samples at once (no random subsets: deterministic). It can be slightly negative
    for two samples of one distribution.
    """
    x, y = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m, n, d = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    kxx = (x @ x.T / d + coef) ** degree
    kyy = (y @ y.T / d + coef) ** degree
    kxy = (x @ y.T / d + coef) ** degree
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * n))


def kid_torchscript(pred_images, ref_images, net_path, *, data_range: float) -> float:
    """KID (:func:`kid_unbiased`) on the features of a user's TorchScript net."""
    net = load_feature_net(net_path)
    return kid_unbiased(
        extract_features(net, pred_images, data_range),
        extract_features(net, ref_images, data_range),
    )


def lpips_from_features(fx: Sequence[Tensor], fy: Sequence[Tensor]) -> Tensor:
    """LPIPS distance (Zhang et al. 2018, eq. 1) per pair, from lists of (N, C_l, H_l, W_l)
    feature maps, with unit weights for every channel and layer (the paper's "lin" heads
    are not used, as in its baseline variant ``lpips=False``):

        d(x, y) = sum_l mean_{h,w} sum_c (x^_l - y^_l)^2,  x^_l = x_l / (|x_l|_c + 1e-10)

    (x^ unit-normalised over channels at each position). Symmetric, 0 for identical inputs.
    """
    total = torch.zeros(fx[0].shape[0], dtype=torch.float64)
    for a, b in zip(fx, fy, strict=True):
        a, b = a.double(), b.double()
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total += ((a - b) ** 2).sum(dim=1).mean(dim=(1, 2))
    return total


@torch.no_grad()
def lpips_torchscript(pred_images, ref_images, net_path, *, data_range: float) -> float:
    """Mean LPIPS over the pairs (pred[i], ref[i]) with a user's TorchScript net that
    returns a list/tuple of feature maps (N, C, H, W) (see :func:`lpips_from_features`)."""
    net = load_feature_net(net_path)
    pred, ref = list(_batches(pred_images, data_range)), list(_batches(ref_images, data_range))
    if [x.shape for x in pred] != [x.shape for x in ref]:
        raise ValueError("LPIPS compares pairs: pred and ref must have the same shapes")
    dists = [
        lpips_from_features(list(net(x)), list(net(y))) for x, y in zip(pred, ref, strict=True)
    ]
    return float(torch.cat(dists).mean())


def perceptual_metrics(
    pred_images,
    ref_images,
    *,
    data_range: float,
    feature_net: str | os.PathLike | None = None,
    lpips_net: str | os.PathLike | None = None,
) -> dict:
    """``fd_demgen_rand`` always; ``fid_torchscript`` and ``kid_torchscript`` with a
    ``feature_net`` file, ``lpips_torchscript`` with an ``lpips_net`` file (the paths are
    reported beside them)."""
    pred, ref = list(pred_images), list(ref_images)
    out: dict = {
        "fd_demgen_rand": frechet_distance_demgen_random_features(pred, ref, data_range=data_range)
    }
    if feature_net is not None:
        out["fid_torchscript"] = fid_torchscript(pred, ref, feature_net, data_range=data_range)
        out["kid_torchscript"] = kid_torchscript(pred, ref, feature_net, data_range=data_range)
        out["feature_net"] = os.fspath(feature_net)
    if lpips_net is not None:
        out["lpips_torchscript"] = lpips_torchscript(pred, ref, lpips_net, data_range=data_range)
        out["lpips_net"] = os.fspath(lpips_net)
    return out
