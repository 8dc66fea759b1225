import pytest
import torch

from demgen.models.unet import UNet


@pytest.mark.parametrize("stem", [1, 4])
def test_shapes_and_backward(stem):
    m = UNet(4, 1, base=8, depth=3, stem=stem)
    x = torch.randn(2, 4, 64, 64, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 1, 64, 64)
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in m.parameters())


def test_rejects_sizes_not_divisible():
    m = UNet(4, 1, base=8, depth=2, stem=2)
    assert m.size_multiple == 8
    with pytest.raises(ValueError, match="divisible by 8"):
        m(torch.randn(1, 4, 60, 64))


def test_head_is_float32_under_bf16_autocast():
    m = UNet(4, 1, base=8, depth=2, stem=2).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(1, 4, 32, 32))
    assert y.dtype == torch.float32


def test_bad_stem():
    with pytest.raises(ValueError):
        UNet(stem=3)
