"""Input layers that compute in float32 under bf16 autocast.

A network's first convolution reads the normalized inputs themselves, whose small
differences (the shading gradients that encode slope, small height steps) bf16's 8-bit
mantissa rounds away. On the demo world (20 epochs, seeds 1-3), bf16 training with the first
conv in bf16 reached a mean held-out MAE 10 % worse than fp32 (38.5 vs 34.9 m); with it in
fp32, 7 % worse (37.4 m: two seeds within 1.5 m of fp32, one 5.8 m worse;
``benchmarks/precision_parity.json``). Together with the fp32 heads, every network's first
and last layers run in fp32; the rest of the network runs in bf16.
"""

from __future__ import annotations

import torch
from torch import nn


class Float32Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs in float32 even inside a bf16 autocast region."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())


def float32_input(conv: nn.Module) -> nn.Module:
    """Make the input convolution ``conv`` a :class:`Float32Conv2d`, in place: the same
    parameters and initialization, so checkpoints and seeded runs are unchanged in fp32."""
    if type(conv) is not nn.Conv2d:
        raise TypeError(f"expected an nn.Conv2d, got {type(conv).__name__}")
    conv.__class__ = Float32Conv2d
    return conv
