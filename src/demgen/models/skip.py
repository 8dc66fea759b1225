"""A generator that predicts a change: ``out = net(x) + x[:, :k]``.

Wrapping an image-to-image network so that it adds its first ``k`` input channels to its
output turns "draw the image at t" into "draw what changed since day 0": an untrained (or
zero-output) network reproduces its input exactly, which for temporal synthesis is the
persistence baseline, and every step of training has to improve on it. The skip is part of
the module, so an exported graph computes it too.
"""

from __future__ import annotations

import torch
from torch import nn


class InputSkip(nn.Module):
    """``net(x) + x[:, :channels]`` (float32), keeping ``net``'s ``size_multiple``."""

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.net = net
        self.channels = int(channels)

    @property
    def size_multiple(self) -> int:
        m = getattr(self.net, "size_multiple", None)
        return int(m) if m is not None else 2 ** int(getattr(self.net, "depth", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).float() + x[:, : self.channels].float()
