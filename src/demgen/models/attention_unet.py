"""Attention U-Net (Oktay et al., 2018, MIDL, arXiv:1804.03999).

A U-Net whose skip connections pass through additive attention gates: before the
encoder's features ``x`` at one level are concatenated into the decoder, they are
multiplied by coefficients ``alpha`` in [0, 1] computed from ``x`` and the coarser
decoder features ``g`` (the gating signal), so the decoder receives only the parts
of the skip that are relevant to what the coarser level has already found. Per the
paper's equations (1) and (2), with ``x`` downsampled to ``g``'s grid by a 2x2
stride-2 conv and ``alpha`` resampled back bilinearly:

    q = psi^T relu(W_x^T x + W_g^T g + b_g) + b_psi,    alpha = sigmoid(q)

Encoder and decoder blocks are two 3x3 conv-BatchNorm-ReLU layers, downsampling is
2x2 max-pooling and upsampling a 2x2 stride-2 transposed conv. The 1x1 head runs in
float32 even under bf16 autocast.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from demgen.models.fp32 import float32_input


class ConvBlock(nn.Sequential):
    """Two 3x3 conv -> BatchNorm -> ReLU layers."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate: scales skip features ``x`` by ``alpha(x, g)``.

    ``g`` is the gating signal at half the resolution of ``x``.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta_x = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.phi_g = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        q = self.psi(F.relu(self.theta_x(x) + self.phi_g(g)))
        alpha = F.interpolate(
            torch.sigmoid(q), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return x * alpha


class AttentionUNet(nn.Module):
    """U-Net with attention-gated skips; widths ``base * 2**level``, capped at ``max_width``.

    Inputs must have height and width divisible by ``2**depth``.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 1,
        base: int = 32,
        depth: int = 4,
        max_width: int = 512,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        widths = [min(base * 2**level, max_width) for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        ch = in_channels
        for w in widths:
            self.encoders.append(ConvBlock(ch, w))
            ch = w
        # Decoder modules are listed from the deepest level (depth - 1) to level 0.
        self.gates = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            skip, coarse = widths[level], widths[level + 1]
            self.gates.append(AttentionGate(skip, coarse, max(skip // 2, 1)))
            self.ups.append(nn.ConvTranspose2d(coarse, skip, 2, stride=2))
            self.decoders.append(ConvBlock(2 * skip, skip))
        float32_input(self.encoders[0][0])
        self.head = nn.Conv2d(widths[0], out_channels, 1)

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
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for gate, up, decoder, skip in zip(
            self.gates, self.ups, self.decoders, reversed(skips[:-1]), strict=True
        ):
            x = decoder(torch.cat([gate(skip, x), up(x)], dim=1))
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(x.float())
