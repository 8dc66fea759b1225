"""Losses for DEM regression and translation, every one masked by pixel validity.

All functions take ``pred`` and ``target`` of shape ``(B, 1, H, W)`` and an optional
boolean ``mask`` of the same shape (True where the reference height is valid); a loss
is averaged over valid pixels only, and is an exact zero (still attached to the graph)
when no pixel is valid. Whatever invalid pixels hold (NaN, inf, 1e6) changes neither a
loss nor its gradient: they are replaced by 0 before any arithmetic (``0 * NaN`` would
be NaN, and a masked-out NaN still poisons the backward pass of ``abs`` or a convolution).

- :func:`pixel_loss`: L1, MSE or Huber on valid pixels.
- :func:`gradient_loss`: L1 between the forward differences of prediction and target
  (Sat2DEM's gradient loss), on pairs of valid pixels.
- :func:`masked_ssim` / :func:`ssim_loss`: structural similarity (Wang et al., 2004) with a
  Gaussian window, computed with validity-weighted local statistics.
- :func:`adversarial_loss`: the GAN objectives of pix2pix, BCE (Goodfellow et al., 2014)
  or least squares (LSGAN, Mao et al., 2017, arXiv:1611.04076).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

PIXEL_LOSSES = ("l1", "mse", "huber")
GAN_MODES = ("bce", "lsgan")

#: Huber transition point in normalized units; with heights normalized to [-1, 1] this
#: is 2.5% of the training range: quadratic for small errors, L1 beyond.
HUBER_DELTA = 0.05


def _zero(t: torch.Tensor) -> torch.Tensor:
    """A zero that keeps ``t`` in the graph (so ``backward`` still works)."""
    return torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0


def _valid_only(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` (float) with 0 wherever ``mask`` is False, so invalid values cannot leak."""
    return torch.where(mask, x.float(), torch.zeros((), dtype=torch.float32, device=x.device))


def pixel_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    kind: str = "l1",
    huber_delta: float = HUBER_DELTA,
) -> torch.Tensor:
    """Mean L1, MSE or Huber (``kind``) over the pixels where ``mask`` is True.

    Huber is ``0.5 e^2 / delta`` for ``|e| < delta`` and ``|e| - 0.5 delta`` beyond
    (PyTorch's ``smooth_l1_loss`` with ``beta=delta``).
    """
    if kind not in PIXEL_LOSSES:
        raise ValueError(f"loss must be one of {PIXEL_LOSSES}, got {kind!r}")
    pred = pred.float()
    target = target.float()
    if mask is not None:
        pred, target = pred[mask], target[mask]
    if pred.numel() == 0:
        return _zero(pred)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    return F.smooth_l1_loss(pred, target, beta=huber_delta)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    """Mean absolute error over valid pixels."""
    return pixel_loss(pred, target, mask, "l1")


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    """Mean squared error over valid pixels."""
    return pixel_loss(pred, target, mask, "mse")


def masked_huber(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    delta: float = HUBER_DELTA,
):
    """Huber loss over valid pixels (see :func:`pixel_loss`)."""
    return pixel_loss(pred, target, mask, "huber", huber_delta=delta)


def gradient_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 distance between the forward differences of ``pred`` and ``target``.

    With ``dx z[i, j] = z[i, j+1] - z[i, j]`` and ``dy z[i, j] = z[i+1, j] - z[i, j]``::

        L = mean_{(i,j) in Px} |dx pred - dx target| + mean_{(i,j) in Py} |dy pred - dy target|

    where ``Px`` (``Py``) are the horizontal (vertical) pixel pairs whose two pixels are
    both valid. This is the gradient loss of Sat2DEM (Panagiotou et al., 2020,
    "Generating Elevation Surface from a Single RGB Remotely Sensed Image Using Deep
    Learning", Remote Sensing 12(12):2002), which makes the generator reproduce slopes
    and break lines rather than only heights. A direction with no valid pair adds 0.
    """
    if mask is None:
        mask = torch.ones_like(target, dtype=torch.bool)
    mask = mask.bool()
    pred, target = _valid_only(pred, mask), _valid_only(target, mask)
    terms = []
    for dim in (-1, -2):
        n = pred.shape[dim]
        dp = pred.narrow(dim, 1, n - 1) - pred.narrow(dim, 0, n - 1)
        dt = target.narrow(dim, 1, n - 1) - target.narrow(dim, 0, n - 1)
        both = mask.narrow(dim, 1, n - 1) & mask.narrow(dim, 0, n - 1)
        diff = (dp - dt).abs()[both]
        terms.append(diff.mean() if diff.numel() else _zero(pred))
    return terms[0] + terms[1]


def gaussian_window(
    size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32
) -> torch.Tensor:
    """A normalized 2-D Gaussian kernel of shape ``(1, 1, size, size)``."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


#: SSIM constants of Wang et al. (2004): C1 = (K1 L)^2, C2 = (K2 L)^2.
SSIM_K1, SSIM_K2 = 0.01, 0.03


def masked_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    window_size: int = 11,
    sigma: float = 1.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004, IEEE TIP 13(4)) over valid pixels.

    Each chip is first rescaled to ``[0, 1]`` by its *target's* valid minimum and range
    (``x' = (x - min t) / max(max t - min t, 1e-6)``, the same transform for prediction
    and target), so the data range ``L`` is 1 whatever the units (metres or normalized)
    and the score does not depend on a chip's absolute height. Local means, variances
    and covariance are Gaussian-weighted (``window_size`` 11, ``sigma`` 1.5) averages over
    the *valid* pixels of each window (normalized convolution: invalid pixels and the
    area outside the chip get weight 0), and::

        SSIM = (2 mu_p mu_t + C1)(2 s_pt + C2) / ((mu_p^2 + mu_t^2 + C1)(s_p^2 + s_t^2 + C2))

    with ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``. ``reduction="mean"`` averages the SSIM
    map over valid pixels (1.0 when none is valid); ``"none"`` returns the map.
    """
    if mask is None:
        mask = torch.ones_like(target, dtype=torch.bool)
    mask = mask.bool()
    pred, target = _valid_only(pred, mask), _valid_only(target, mask)
    w = mask.to(pred.dtype)
    # Per-chip rescaling by the target's valid range (no gradient flows through it).
    with torch.no_grad():
        big = torch.finfo(target.dtype).max
        lo = torch.where(mask, target, big).amin(dim=(1, 2, 3), keepdim=True)
        hi = torch.where(mask, target, -big).amax(dim=(1, 2, 3), keepdim=True)
        empty = ~mask.flatten(1).any(dim=1).view(-1, 1, 1, 1)
        lo = torch.where(empty, torch.zeros_like(lo), lo)
        scale = torch.where(empty, torch.ones_like(hi), (hi - lo).clamp_min(1e-6))
    p = (pred - lo) / scale
    t = (target - lo) / scale
    win = gaussian_window(window_size, sigma, device=pred.device, dtype=pred.dtype)
    c = pred.shape[1]
    win = win.expand(c, 1, window_size, window_size)

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, win, padding=window_size // 2, groups=c)

    wsum = filt(w).clamp_min(1e-8)
    mu_p = filt(w * p) / wsum
    mu_t = filt(w * t) / wsum
    s_pp = (filt(w * p * p) / wsum - mu_p**2).clamp_min(0.0)
    s_tt = (filt(w * t * t) / wsum - mu_t**2).clamp_min(0.0)
    s_pt = filt(w * p * t) / wsum - mu_p * mu_t
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim = ((2 * mu_p * mu_t + c1) * (2 * s_pt + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (s_pp + s_tt + c2)
    )
    if reduction == "none":
        return ssim
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    vals = ssim[mask]
    return vals.mean() if vals.numel() else _zero(ssim) + 1.0


def ssim_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """``1 - SSIM`` over valid pixels (see :func:`masked_ssim`); 0 for identical chips."""
    return 1.0 - masked_ssim(pred, target, mask, window_size, sigma)


def adversarial_loss(logits: torch.Tensor, real: bool, mode: str = "bce") -> torch.Tensor:
    """The GAN loss of ``logits`` against the label ``real`` (1) or fake (0).

    ``bce``: binary cross-entropy on logits (the original GAN / pix2pix objective);
    ``lsgan``: ``mean((logits - label)^2)`` (Mao et al., 2017), which pix2pix's
    reference code offers as ``--gan_mode lsgan``.
    """
    if mode not in GAN_MODES:
        raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {mode!r}")
    logits = logits.float()
    label = torch.full_like(logits, 1.0 if real else 0.0)
    if mode == "bce":
        return F.binary_cross_entropy_with_logits(logits, label)
    return F.mse_loss(logits, label)


def gradient_penalty(
    critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al., 2017, arXiv:1704.00028).

    ``mean((||grad_x c(x)||_2 - 1)^2)`` at random interpolates
    ``x = a real + (1 - a) fake``, ``a ~ U(0, 1)`` per sample, where ``c(x)`` is the
    critic's output averaged over its patch map (one score per sample) and the norm is
    taken over all of a sample's dimensions.
    """
    a = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    x = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    out = critic(x).flatten(1).mean(dim=1)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return ((norm - 1.0) ** 2).mean()


__all__ = [
    "GAN_MODES",
    "HUBER_DELTA",
    "PIXEL_LOSSES",
    "adversarial_loss",
    "gaussian_window",
    "gradient_loss",
    "gradient_penalty",
    "masked_huber",
    "masked_l1",
    "masked_mse",
    "masked_ssim",
    "pixel_loss",
    "ssim_loss",
]
