"""Attention modules that reweight a feature map and keep its shape.

Three published designs, each a drop-in ``nn.Module`` mapping ``(B, C, H, W)`` to
``(B, C, H, W)``, so a model can insert one after any block:

- :class:`CBAM`, Convolutional Block Attention Module (Woo et al., 2018, ECCV,
  arXiv:1807.06521): channel attention from average- and max-pooled descriptors
  through a shared MLP, then spatial attention from a 7x7 conv over the channel-wise
  mean and max maps.
- :class:`GAM`, Global Attention Mechanism (Liu et al., 2021, arXiv:2112.05561):
  channel attention from a per-pixel MLP over channels (no pooling, so spatial
  information is kept), then spatial attention from two 7x7 convs with BatchNorm.
- :class:`SimAM`, a parameter-free attention (Yang et al., 2021, ICML): each
  neuron is weighted by the inverse of its minimal energy, which is low for neurons
  that stand out from the rest of their channel.

:func:`make_attention` builds one by name, so models and configs can say
``attention="cbam"``.
"""

from __future__ import annotations

import torch
from torch import nn


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., 2018, arXiv:1807.06521).

    ``x' = Mc(x) * x`` then ``x'' = Ms(x') * x'`` where
    ``Mc = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` (the MLP is shared, with a
    hidden width of ``channels // reduction``) and
    ``Ms = sigmoid(conv_kxk([mean_c(x'), max_c(x')]))``.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        hidden = max(channels // reduction, 1)
        # 1x1 convs are the paper's shared MLP applied to (B, C, 1, 1) descriptors.
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + peak)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


class GAM(nn.Module):
    """Global Attention Mechanism (Liu et al., 2021, arXiv:2112.05561).

    Channel submodule: a two-layer MLP (reduction ``rate``) applied to every pixel's
    channel vector, ``x' = sigmoid(MLP(x)) * x``. Spatial submodule: two 7x7 convs
    (``C -> C/rate -> C``) with BatchNorm, ``x'' = sigmoid(conv(x')) * x'``.

    The BatchNorm needs more than one value per channel in training, so a batch of
    one at 1x1 spatial size (the innermost block of a 256-px pix2pix U-Net) fails;
    use CBAM or SimAM there, or a batch larger than one.
    """

    def __init__(self, channels: int, rate: int = 4) -> None:
        super().__init__()
        hidden = max(channels // rate, 1)
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 7, padding=3),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 7, padding=3),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_att = self.channel_mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x * torch.sigmoid(channel_att)
        return x * torch.sigmoid(self.spatial(x))


class SimAM(nn.Module):
    """Simple, parameter-free attention (Yang et al., 2021, ICML, "SimAM").

    For each channel with ``n = H*W - 1``, the inverse minimal energy of a neuron is
    ``(x - mu)^2 / (4 * (var + e_lambda)) + 0.5`` with ``var = sum((x - mu)^2) / n``;
    the output is ``x * sigmoid(inverse energy)``. ``e_lambda`` is the paper's
    regulariser (1e-4). At 1x1 spatial size ``n`` is clamped to 1, so the weight is
    ``sigmoid(0.5)`` instead of NaN.
    """

    def __init__(self, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = max(x.shape[-2] * x.shape[-1] - 1, 1)
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        inverse_energy = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(inverse_energy)


ATTENTION_NAMES = ("cbam", "gam", "simam")


def make_attention(name: str | None, channels: int) -> nn.Module:
    """Build the attention module ``name`` for ``channels`` channels, with paper defaults.

    ``None`` or ``"none"`` gives ``nn.Identity``, so callers can always insert the result.
    """
    key = "none" if name is None else name.lower()
    if key == "none":
        return nn.Identity()
    if key == "cbam":
        return CBAM(channels)
    if key == "gam":
        return GAM(channels)
    if key == "simam":
        return SimAM()
    raise ValueError(f"unknown attention {name!r}; choose from None, 'none', {ATTENTION_NAMES}")
