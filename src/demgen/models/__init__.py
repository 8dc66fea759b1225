"""The model zoo: pure-PyTorch architectures, one per module, built by name.

``build_model("pix2pix", in_channels=4)`` is what configs and tasks call; each name
maps to a class whose constructor arguments are its whole configuration.
"""

from __future__ import annotations

from torch import nn

from demgen.models.attention_unet import AttentionUNet
from demgen.models.patchgan import PatchGAN
from demgen.models.pix2pix import Pix2PixUNet
from demgen.models.resdepth import ResDepthUNet
from demgen.models.resunet import ResNetUNet
from demgen.models.reviser import Reviser
from demgen.models.unet import UNet

MODELS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "pix2pix": Pix2PixUNet,
    "attention_unet": AttentionUNet,
    "resnet_unet": ResNetUNet,
    "resdepth": ResDepthUNet,
    "patchgan": PatchGAN,
    "reviser": Reviser,
}


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the model registered as ``name`` with ``kwargs``."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None
    return cls(**kwargs)


__all__ = [
    "MODELS",
    "AttentionUNet",
    "PatchGAN",
    "Pix2PixUNet",
    "ResDepthUNet",
    "ResNetUNet",
    "Reviser",
    "UNet",
    "build_model",
]
