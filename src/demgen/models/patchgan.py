"""PatchGAN discriminator (Isola et al., 2017, CVPR, arXiv:1611.07004, section 3.2.2).

A fully convolutional classifier that says, for every 70x70 patch of its input,
whether the patch looks real; it models only high-frequency structure and leaves
low frequencies to the L1 term. This is the reference code's ``NLayerDiscriminator``:
a 4x4 stride-2 conv with ``base`` filters and LeakyReLU(0.2), ``n_layers - 1`` more
4x4 stride-2 conv-norm-LeakyReLU blocks doubling the width (capped at 8x base), one
4x4 stride-1 conv-norm-LeakyReLU block, and a 4x4 stride-1 conv to one logit per
patch. With ``n_layers=3`` the receptive field is 70x70 pixels.

The input is the concatenated conditioning image and elevation, so ``in_channels``
is image bands + 1 (4 for RGB). Norm layers are affine and the convs before them
have no bias; with ``in_channels=4`` that is 2,766,657 parameters for either norm
(the reference code with ``--norm batch`` has the same count).

``attention`` inserts a module (see :mod:`demgen.models.attention`) after each of
the inner conv-norm-LeakyReLU blocks. The logits are computed in float32 even under
bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from demgen.models.attention import make_attention
from demgen.models.fp32 import float32_input
from demgen.models.pix2pix import NORMS, norm_layer


def receptive_field(kernel_strides: Sequence[tuple[int, int]]) -> int:
    """Receptive field in input pixels of a chain of convs given as ``(kernel, stride)``.

    Walking back from one output unit, each layer maps a field of ``r`` units to
    ``r * stride + (kernel - stride)`` units of its input.
    """
    r = 1
    for kernel, stride in reversed(kernel_strides):
        r = r * stride + (kernel - stride)
    return r


class PatchGAN(nn.Module):
    """The pix2pix PatchGAN discriminator; returns a ``(B, 1, h, w)`` map of logits."""

    def __init__(
        self,
        in_channels: int = 4,
        base: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        attention: str | None = None,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose from {NORMS}")
        bias = norm == "none"
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_channels, base, 4, stride=2, padding=1), nn.LeakyReLU(0.2))]
        )
        float32_input(self.blocks[0][0])
        self.attention = nn.ModuleList([nn.Identity()])
        width = base
        for n in range(1, n_layers + 1):
            cout = base * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            self.blocks.append(
                nn.Sequential(
                    nn.Conv2d(width, cout, 4, stride=stride, padding=1, bias=bias),
                    norm_layer(norm, cout),
                    nn.LeakyReLU(0.2),
                )
            )
            self.attention.append(make_attention(attention, cout))
            width = cout
        self.head = nn.Conv2d(width, 1, 4, stride=1, padding=1)

    @property
    def receptive_field(self) -> int:
        """Side in input pixels of the patch that each output logit sees (70 for 3 layers)."""
        convs = [block[0] for block in self.blocks] + [self.head]
        return receptive_field([(c.kernel_size[0], c.stride[0]) for c in convs])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, attention in zip(self.blocks, self.attention, strict=True):
            x = attention(block(x))
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(x.float())
