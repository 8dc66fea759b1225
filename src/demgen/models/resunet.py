"""U-Net with a ResNet-18/34 encoder (He et al., 2016, CVPR, arXiv:1512.03385).

The encoder is a plain-PyTorch copy of torchvision's ``resnet18``/``resnet34`` up to
the last residual stage, with the same module names (``conv1``, ``bn1``,
``layer1``..``layer4``, ``downsample.0``/``.1``), so a torchvision-format state dict
saved to a local file loads into it directly: ``weights=PATH``. Nothing is ever
downloaded. The classifier (``fc.*``) is ignored. For ``in_channels != 3`` the RGB
filters of ``conv1`` are adapted (see :func:`adapt_rgb_filters`).

The decoder follows the common "U-Net with a pretrained encoder" recipe (e.g.
Iglovikov & Shvets, 2018, TernausNet, arXiv:1801.05746): five stages that upsample
by 2 (nearest), concatenate the encoder features of that resolution (strides 16, 8,
4, 2 and, for the last stage, none) and apply two 3x3 conv-BatchNorm-ReLU layers,
with widths 256-128-64-32-16; a 3x3 head gives ``out_channels`` at full resolution
in float32, even under bf16 autocast. Inputs must be divisible by 32.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from demgen.models.fp32 import float32_input

# Blocks per stage, from the ResNet paper's table 1.
RESNET_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
DECODER_WIDTHS = (256, 128, 64, 32, 16)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm and an identity (or 1x1) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def make_layer(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage: ``blocks`` basic blocks, the first one strided."""
    layers = [BasicBlock(in_ch, out_ch, stride)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetEncoder(nn.Module):
    """torchvision-compatible ResNet-18/34 without ``avgpool``/``fc``; returns 5 feature maps.

    Features are at strides 2, 4, 8, 16, 32 with 64, 64, 128, 256, 512 channels.
    """

    def __init__(self, in_channels: int = 3, encoder: str = "resnet18") -> None:
        super().__init__()
        if encoder not in RESNET_LAYERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose from {sorted(RESNET_LAYERS)}")
        self.name = encoder
        self.conv1 = float32_input(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        n1, n2, n3, n4 = RESNET_LAYERS[encoder]
        self.layer1 = make_layer(64, 64, n1, stride=1)
        self.layer2 = make_layer(64, 128, n2, stride=2)
        self.layer3 = make_layer(128, 256, n3, stride=2)
        self.layer4 = make_layer(256, 512, n4, stride=2)
        # torchvision's initialisation, so an unloaded encoder trains the same way.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def adapt_rgb_filters(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn ``(out, 3, k, k)`` RGB filters into ``(out, in_channels, k, k)`` ones.

    Fewer than 3 channels each get the sum of the RGB filters divided by
    ``in_channels``. With 3 or more, input channels 0, 1, 2 get the R, G, B filters
    (so put those bands first, in that order) and every further channel the mean
    RGB filter, all scaled by ``3 / in_channels``. Either way the filters' sum over
    input channels is kept, so a constant input gives the pretrained response.
    """
    rgb = weight.shape[1]
    if in_channels < rgb:
        return weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels
    extra = weight.mean(dim=1, keepdim=True).repeat(1, in_channels - rgb, 1, 1)
    return torch.cat([weight, extra], dim=1) * (rgb / in_channels)


def load_torchvision_resnet(encoder: ResNetEncoder, path: str | Path) -> None:
    """Load a local torchvision-format ResNet state dict file into ``encoder``.

    ``fc.*`` entries are dropped; 3-channel ``conv1`` filters are adapted to the
    encoder's input channels. Raises ``FileNotFoundError`` or ``ValueError`` naming
    the file when it is missing or is not a matching state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ResNet weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    in_channels = encoder.conv1.in_channels
    rgb = state.get("conv1.weight")
    if rgb is not None and rgb.shape[1] == 3 and in_channels != 3:
        state["conv1.weight"] = adapt_rgb_filters(rgb, in_channels)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a torchvision {encoder.name} state dict: "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{path}: {key} has shape {tuple(value.shape)}, "
                f"{encoder.name} needs {tuple(expected[key].shape)}"
            )
    encoder.load_state_dict(state)


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip (if any), two 3x3 conv-BatchNorm-ReLU layers."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_ch + skip_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class ResNetUNet(nn.Module):
    """U-Net with a ResNet-18/34 encoder, optionally initialised from a local weights file."""

    size_multiple = 32

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        encoder: str = "resnet18",
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(in_channels, encoder)
        if weights is not None:
            load_torchvision_resnet(self.encoder, weights)
        skip_widths = (256, 128, 64, 64, 0)  # layer3, layer2, layer1, stem, none
        self.decoders = nn.ModuleList()
        ch = 512
        for skip, width in zip(skip_widths, DECODER_WIDTHS, strict=True):
            self.decoders.append(DecoderBlock(ch, skip, width))
            ch = width
        self.head = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {m}")
        features = self.encoder(x)
        x = features[-1]
        skips: list[torch.Tensor | None] = [*reversed(features[:-1]), None]
        for decoder, skip in zip(self.decoders, skips, strict=True):
            x = decoder(x, skip)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(x.float())
