"""U-Net for dense regression (Ronneberger et al., 2015, MICCAI, arXiv:1505.04597).

Encoder of double 3x3 conv blocks with max-pooling, a decoder that upsamples
bilinearly and concatenates the encoder's features, and a 1x1 head. The head runs
in float32 even under bf16 autocast, so heights are never rounded to 8 mantissa
bits before they are turned into metres; so does the first conv, which reads the inputs
at full precision (:mod:`demgen.models.fp32`).

``stem`` > 1 runs the U-Net on a space-to-depth copy of the input (PixelUnshuffle,
Shi et al., 2016, arXiv:1609.05158) at 1/stem resolution, upsamples its output
bilinearly and adds a small full-resolution refinement: terrain is smooth at the
scale of a few pixels, so this keeps accuracy for about stem^2 less compute.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from demgen.models.fp32 import float32_input


class DoubleConv(nn.Sequential):
    """Two 3x3 conv -> BatchNorm -> ReLU layers, the U-Net's basic block."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A configurable U-Net: ``depth`` poolings, widths ``base * 2**level`` capped at ``max_width``.

    Inputs must have height and width divisible by ``2**depth``.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 1,
        base: int = 32,
        depth: int = 4,
        max_width: int = 512,
        stem: int = 1,
        refine_width: int = 16,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be at least 1")
        if stem < 1 or stem & (stem - 1):
            raise ValueError("stem must be a power of two")
        self.depth = depth
        self.stem = stem
        widths = [min(base * 2**i, max_width) for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        ch = in_channels * stem * stem
        for w in widths:
            self.encoders.append(DoubleConv(ch, w))
            ch = w
        self.decoders = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.decoders.append(DoubleConv(ch + w, w))
            ch = w
        float32_input(self.encoders[0][0])
        self.head = nn.Conv2d(ch, out_channels, 1)
        self.refine = None
        if stem > 1:
            self.refine = nn.Sequential(
                nn.Conv2d(in_channels + out_channels, refine_width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(refine_width, out_channels, 3, padding=1),
            )

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return self.stem * 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.size_multiple
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {factor}")
        full = x
        if self.stem > 1:
            x = F.pixel_unshuffle(x, self.stem)
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for dec, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.head(x.float())
            if self.refine is None:
                return out
            coarse = F.interpolate(out, size=full.shape[-2:], mode="bilinear", align_corners=False)
            return coarse + self.refine(torch.cat([full.float(), coarse], dim=1))
