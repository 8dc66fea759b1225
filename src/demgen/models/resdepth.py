"""ResDepth U-Net for residual DSM refinement (Stucker & Schindler, 2022, ISPRS J.
Photogramm. Remote Sens. 183, "ResDepth: A deep residual prior for 3D reconstruction
from high-resolution satellite images", doi:10.1016/j.isprsjprs.2021.11.009).

ResDepth refines an initial DSM (e.g. from stereo matching) given the DSM and
co-registered images: the network predicts only a *correction*, which is added to
the initial DSM by a long skip connection, so it learns a prior over the errors
rather than over the whole surface. Channel 0 of the input must be the normalized
initial DSM; further channels are the image bands. This module returns the residual
alone; the refinement task adds it to input channel 0 (and so owns the choice of
where in the normalized space the addition happens).

Architecture as in the authors' code: per level one 3x3 conv-BatchNorm-ReLU (conv
without bias) then 2x2 max-pooling, widths ``base * 2**level`` capped at
``max_width``; a same-width bottleneck conv block; a decoder that upsamples with a
2x2 stride-2 transposed conv, *adds* the encoder features of the same level (additive
rather than concatenated skips) and applies a conv block; and a last 3x3 conv without
bias to ``out_channels``, run in float32 even under bf16 autocast.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from demgen.models.fp32 import float32_input


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 conv (no bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResDepthUNet(nn.Module):
    """The ResDepth U-Net; returns the residual to add to input channel 0 (the initial DSM).

    Inputs must have height and width divisible by ``2**depth``.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 1,
        base: int = 32,
        depth: int = 5,
        max_width: int = 512,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        widths = [min(base * 2**level, max_width) for level in range(depth)]
        self.encoders = nn.ModuleList()
        ch = in_channels
        for w in widths:
            self.encoders.append(conv_block(ch, w))
            ch = w
        float32_input(self.encoders[0][0])
        self.bottleneck = conv_block(ch, ch)
        # ups[k] / decoders[k] work at level depth - 1 - k; the last level has no conv block.
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w, w, 2, stride=2) for w in reversed(widths))
        self.decoders = nn.ModuleList(
            conv_block(w, w_next) for w, w_next in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1, bias=False)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} must be divisible by 2**depth = {m}"
            )
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for k, (up, skip) in enumerate(zip(self.ups, reversed(skips), strict=True)):
            x = up(x) + skip
            if k < len(self.decoders):
                x = self.decoders[k](x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(x.float())
