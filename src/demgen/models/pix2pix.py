"""pix2pix U-Net generator (Isola et al., 2017, CVPR, arXiv:1611.07004).

The "U-Net 256" of the paper and of its reference code (pytorch-CycleGAN-and-pix2pix,
``UnetGenerator``), written as two flat lists instead of nested blocks:

- encoder: ``depth`` 4x4 stride-2 convs (C64-C128-C256-C512-C512-C512-C512-C512 for
  the default ``depth=8``, so a 256x256 input reaches 1x1), each preceded by
  LeakyReLU(0.2) except the first; every conv but the first and the innermost is
  followed by a norm;
- decoder: ``depth`` 4x4 stride-2 transposed convs, each preceded by ReLU and
  followed by a norm, with dropout 0.5 in the ``n_dropout`` blocks right after the
  innermost one (the paper's noise source); the decoder's output at each level is
  concatenated with the encoder's features of the same resolution;
- the outermost transposed conv maps to ``out_channels`` and ends in tanh (or
  nothing, ``final=None``, for an unbounded regression head). It runs in float32 even
  under bf16 autocast.

Norm layers are affine and convs followed by one have no bias (the bias would be
redundant). With ``norm="instance"`` this gives exactly 54,410,433 parameters for
3 input and 1 output channels, the count the model zoo is specified with. (The
reference code with its default ``--norm batch`` has 54,409,857: it also drops the
biases of the outermost and innermost encoder convs, which have no norm; with
``--norm instance`` it uses non-affine InstanceNorm plus conv biases, 54,405,505.)

``attention`` (see :mod:`demgen.models.attention`) inserts one module after every
encoder block and after every decoder block except the outermost one, whose output
is the image itself.
"""

from __future__ import annotations

import torch
from torch import nn

from demgen.models.attention import make_attention
from demgen.models.fp32 import float32_input

NORMS = ("instance", "batch", "none")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """An affine norm layer: InstanceNorm (Ulyanov et al., 2016), BatchNorm, or none.

    Instance normalization is computed as GroupNorm with one channel per group: the same
    function and parameters (``weight``, ``bias``; checkpoints of ``InstanceNorm2d(affine=True)``
    load unchanged), and PyTorch's GroupNorm kernels train the U-Net-256 about 14 % faster
    on CPU than its InstanceNorm, in NCHW and channels_last alike.
    """
    if norm == "instance":
        return nn.GroupNorm(channels, channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose from {NORMS}")


class Pix2PixUNet(nn.Module):
    """The pix2pix U-Net generator, with width, depth and input channels configurable.

    Widths are ``min(base * 2**level, max_width)`` for ``level`` in ``0..depth-1``.
    Inputs must have height and width divisible by ``2**depth``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base: int = 64,
        depth: int = 8,
        max_width: int = 512,
        norm: str = "instance",
        dropout: float = 0.5,
        n_dropout: int = 3,
        attention: str | None = None,
        final: str | None = "tanh",
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose from {NORMS}")
        if final not in ("tanh", "none", None):
            raise ValueError(f"final must be 'tanh' or None, got {final!r}")
        self.depth = depth
        widths = [min(base * 2**level, max_width) for level in range(depth)]
        self.widths = widths
        bias = norm == "none"
        # The n_dropout decoder blocks just outside the innermost one, as in the paper.
        dropout_levels = set(range(depth - 2, max(depth - 2 - n_dropout, 0), -1))

        self.down = nn.ModuleList()
        for level, width in enumerate(widths):
            outermost, innermost = level == 0, level == depth - 1
            layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2)]
            cin = in_channels if outermost else widths[level - 1]
            has_norm = not (outermost or innermost)
            layers.append(nn.Conv2d(cin, width, 4, stride=2, padding=1, bias=bias or not has_norm))
            if has_norm:
                layers.append(norm_layer(norm, width))
            self.down.append(nn.Sequential(*layers))
        float32_input(self.down[0][0])

        # up[level] takes features at the resolution of down[level]'s output up one level.
        self.up = nn.ModuleList()
        for level, width in enumerate(widths):
            cin = width if level == depth - 1 else 2 * width
            if level == 0:
                layers = [nn.ReLU(), nn.ConvTranspose2d(cin, out_channels, 4, stride=2, padding=1)]
                if final == "tanh":
                    layers.append(nn.Tanh())
            else:
                cout = widths[level - 1]
                layers = [
                    nn.ReLU(),
                    nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias),
                    norm_layer(norm, cout),
                ]
                if level in dropout_levels and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

        self.down_attention = nn.ModuleList(make_attention(attention, w) for w in widths)
        # up_attention[level - 1] follows up[level], which outputs widths[level - 1] channels.
        self.up_attention = nn.ModuleList(make_attention(attention, w) for w in widths[:-1])

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
        for down, attention in zip(self.down, self.down_attention, strict=True):
            x = attention(down(x))
            skips.append(x)
        for level in range(self.depth - 1, 0, -1):
            x = self.up_attention[level - 1](self.up[level](x))
            x = torch.cat([skips[level - 1], x], dim=1)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.up[0](x.float())
