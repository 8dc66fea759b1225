"""BatchNorm folding for inference: same outputs, fewer layers, and only in eval mode."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from demgen.models import build_model
from demgen.models.fusion import fuse_conv_bn

CASES = {
    "unet": ({"in_channels": 3, "base": 8, "depth": 2, "stem": 2}, 32),
    "attention_unet": ({"in_channels": 3, "base": 8, "depth": 2}, 32),
    "resdepth": ({"in_channels": 3, "base": 8, "depth": 3}, 32),
    "resnet_unet": ({"in_channels": 3}, 64),
    "pix2pix": ({"in_channels": 3, "base": 8, "depth": 5, "norm": "batch"}, 32),
}


def _randomize_bn(model: nn.Module) -> None:
    """Non-trivial running statistics and affine terms, as after training."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g))


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_model_gives_the_same_output(name):
    torch.manual_seed(0)
    kwargs, size = CASES[name]
    model = build_model(name, **kwargs)
    _randomize_bn(model)
    model.eval()
    x = torch.randn(2, 3, size, size)
    before = _count_bn(model)
    fused = copy.deepcopy(model)
    n = fuse_conv_bn(fused)
    assert n > 0
    assert _count_bn(fused) == before - n
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)


def test_every_batchnorm_of_the_demo_unet_is_folded():
    model = build_model("unet", in_channels=4, base=8, depth=3, stem=4).eval()
    n_bn = _count_bn(model)
    assert fuse_conv_bn(model) == n_bn and _count_bn(model) == 0


def test_fusion_refuses_training_mode_and_skips_unrelated_norms():
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn(build_model("unet", in_channels=3, base=8, depth=2))
    # instance norm (pix2pix's default) is data-dependent at inference: nothing to fold
    model = build_model("pix2pix", in_channels=3, base=8, depth=5).eval()
    assert fuse_conv_bn(model) == 0
