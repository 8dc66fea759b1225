"""Model zoo: shapes, gradients, parameter counts against the architecture definitions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from demgen.models import MODELS, build_model
from demgen.models.attention import CBAM, GAM, SimAM, make_attention
from demgen.models.attention_unet import AttentionGate, AttentionUNet
from demgen.models.patchgan import PatchGAN, receptive_field
from demgen.models.pix2pix import Pix2PixUNet
from demgen.models.resdepth import ResDepthUNet
from demgen.models.resunet import ResNetEncoder, ResNetUNet, adapt_rgb_filters
from demgen.models.reviser import Reviser


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(cin: int, cout: int, k: int, bias: bool) -> int:
    """Parameters of a k x k conv (or transposed conv) layer."""
    return cin * cout * k * k + (cout if bias else 0)


def norm(c: int) -> int:
    """Parameters of an affine norm layer (weight and bias)."""
    return 2 * c


def check_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward, backward, and every parameter has a finite gradient."""
    x = x.clone().requires_grad_(True)
    y = model(x)
    y.float().square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
    return y


# --- attention -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cbam", "gam", "simam"])
def test_attention_keeps_shape_changes_values_and_trains(name):
    module = make_attention(name, 16)
    x = torch.randn(2, 16, 8, 8)
    y = check_backward(module, x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)


def test_attention_param_counts():
    c, h = 32, 32 // 16
    mlp = conv(c, h, 1, True) + conv(h, c, 1, True)
    assert n_params(CBAM(c)) == mlp + conv(2, 1, 7, True)
    h = 32 // 4
    linear = (c * h + h) + (h * c + c)
    assert n_params(GAM(c)) == linear + conv(c, h, 7, True) + norm(h) + conv(h, c, 7, True) + norm(
        c
    )
    assert n_params(SimAM()) == 0


def test_make_attention_names():
    assert isinstance(make_attention(None, 8), nn.Identity)
    assert isinstance(make_attention("none", 8), nn.Identity)
    assert isinstance(make_attention("CBAM", 8), CBAM)
    with pytest.raises(ValueError, match="unknown attention"):
        make_attention("senet", 8)


def test_simam_and_cbam_at_one_pixel():
    x = torch.randn(1, 8, 1, 1)
    assert torch.isfinite(SimAM()(x)).all()
    assert torch.isfinite(CBAM(8)(x)).all()


# --- pix2pix U-Net ---------------------------------------------------------------------


def test_pix2pix_default_param_count_matches_issue():
    m = Pix2PixUNet(3, 1)
    assert n_params(m) == 54_410_433
    # 8 stride-2 convs, 64-128-256-512x5 filters, dropout in the 3 blocks after the innermost.
    convs = [l for block in m.down for l in block if isinstance(l, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256] + [512] * 5
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    with_dropout = [i for i, b in enumerate(m.up) if any(isinstance(l, nn.Dropout) for l in b)]
    assert with_dropout == [4, 5, 6]


def test_pix2pix_small_param_count_from_definition():
    m = Pix2PixUNet(4, 1, base=8, depth=5, max_width=32)
    # widths 8-16-32-32-32; convs followed by a norm have no bias.
    encoder = (
        conv(4, 8, 4, True)  # outermost: no norm
        + conv(8, 16, 4, False)
        + norm(16)
        + conv(16, 32, 4, False)
        + norm(32)
        + conv(32, 32, 4, False)
        + norm(32)
        + conv(32, 32, 4, True)  # innermost: no norm
    )
    decoder = (
        conv(32, 32, 4, False)  # innermost: no skip on its input
        + norm(32)
        + conv(64, 32, 4, False)
        + norm(32)
        + conv(64, 16, 4, False)
        + norm(16)
        + conv(32, 8, 4, False)
        + norm(8)
        + conv(16, 1, 4, True)  # outermost: to the output, tanh
    )
    assert n_params(m) == encoder + decoder


def test_pix2pix_forward_backward_small():
    m = Pix2PixUNet(4, 1, base=8, depth=5, max_width=32)
    y = check_backward(m, torch.randn(2, 4, 64, 64))
    assert y.shape == (2, 1, 64, 64)
    assert y.abs().max() <= 1


def test_pix2pix_classic_depth_reaches_one_pixel():
    m = Pix2PixUNet(3, 1, base=4, depth=8, max_width=32).eval()
    with torch.no_grad():
        y = m(torch.randn(1, 3, 256, 256))
    assert y.shape == (1, 1, 256, 256)


@pytest.mark.parametrize("name", ["cbam", "gam", "simam"])
def test_pix2pix_attention_adds_exactly_its_modules(name):
    kwargs = dict(in_channels=4, base=8, depth=4, max_width=32)
    plain, with_att = Pix2PixUNet(**kwargs), Pix2PixUNet(**kwargs, attention=name)
    widths = [8, 16, 32, 32]
    modules = [make_attention(name, w) for w in widths] + [
        make_attention(name, w) for w in widths[:-1]
    ]
    assert n_params(with_att) - n_params(plain) == sum(n_params(a) for a in modules)
    y = check_backward(with_att, torch.randn(2, 4, 32, 32))
    assert y.shape == (2, 1, 32, 32)


def test_pix2pix_regression_head_and_options():
    m = Pix2PixUNet(4, 2, base=8, depth=3, norm="batch", final=None)
    y = check_backward(m, torch.randn(2, 4, 16, 16))
    assert y.shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match="norm"):
        Pix2PixUNet(norm="group")


# --- PatchGAN and reviser --------------------------------------------------------------


def test_patchgan_param_count_matches_issue():
    assert n_params(PatchGAN(4)) == 2_766_657
    assert n_params(PatchGAN(4, norm="batch")) == 2_766_657


def test_patchgan_small_param_count_from_definition():
    m = PatchGAN(4, base=8, n_layers=2)
    expected = (
        conv(4, 8, 4, True)
        + conv(8, 16, 4, False)
        + norm(16)
        + conv(16, 32, 4, False)  # stride 1
        + norm(32)
        + conv(32, 1, 4, True)
    )
    assert n_params(m) == expected


def test_receptive_field():
    assert PatchGAN().receptive_field == 70
    assert receptive_field([(4, 2), (4, 2), (4, 2), (4, 1), (4, 1)]) == 70
    assert PatchGAN(n_layers=1).receptive_field == 16
    assert PatchGAN(n_layers=2).receptive_field == 34


def test_receptive_field_matches_gradient_support():
    # Without a norm layer (which couples all pixels) one logit depends on a 70x70 patch.
    m = PatchGAN(4, base=4, norm="none")
    x = torch.randn(1, 4, 128, 128, requires_grad=True)
    y = m(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    support = x.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = support.any(dim=1).nonzero(), support.any(dim=0).nonzero()
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


def test_patchgan_forward_backward_and_attention():
    m = PatchGAN(4, base=8)
    y = check_backward(m, torch.randn(2, 4, 64, 64))
    assert y.shape == (2, 1, 6, 6)
    with_att = PatchGAN(4, base=8, attention="cbam")
    extra = sum(n_params(CBAM(c)) for c in (16, 32, 64))
    assert n_params(with_att) - n_params(m) == extra
    assert check_backward(with_att, torch.randn(2, 4, 64, 64)).shape == (2, 1, 6, 6)


def test_reviser_patch_and_image_logits():
    assert n_params(Reviser(4)) == n_params(PatchGAN(4))
    x = torch.randn(2, 4, 64, 64)
    assert check_backward(Reviser(4, base=8), x).shape == (2, 1, 6, 6)
    assert check_backward(Reviser(4, base=8, image_level=True), x).shape == (2, 1)


# --- attention U-Net -------------------------------------------------------------------


def double_conv(cin: int, cout: int) -> int:
    return conv(cin, cout, 3, False) + norm(cout) + conv(cout, cout, 3, False) + norm(cout)


def test_attention_unet_param_count_from_definition():
    m = AttentionUNet(4, 1, base=8, depth=2)

    def gate(skip: int, coarse: int, inter: int) -> int:
        return conv(skip, inter, 2, False) + conv(coarse, inter, 1, True) + conv(inter, 1, 1, True)

    expected = (
        double_conv(4, 8)
        + double_conv(8, 16)
        + double_conv(16, 32)
        + gate(16, 32, 8)
        + conv(32, 16, 2, True)
        + double_conv(32, 16)
        + gate(8, 16, 4)
        + conv(16, 8, 2, True)
        + double_conv(16, 8)
        + conv(8, 1, 1, True)
    )
    assert n_params(m) == expected


def test_attention_unet_forward_backward():
    m = AttentionUNet(4, 1, base=8, depth=3)
    assert check_backward(m, torch.randn(2, 4, 32, 32)).shape == (2, 1, 32, 32)


def test_attention_gate_only_scales_down():
    gate = AttentionGate(8, 16, 4)
    x, g = torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)
    out = gate(x, g)
    assert out.shape == x.shape
    assert (out.abs() <= x.abs() + 1e-6).all()


# --- ResNet U-Net ----------------------------------------------------------------------


def test_resnet_encoder_param_counts_match_torchvision():
    # torchvision resnet18: 11,689,512 with fc (512 * 1000 + 1000 = 513,000).
    assert n_params(ResNetEncoder(3, "resnet18")) == 11_689_512 - 513_000
    assert n_params(ResNetEncoder(3, "resnet34")) == 21_797_672 - 513_000


def test_resnet_unet_forward_backward():
    m = ResNetUNet(4, 1, encoder="resnet18")
    assert check_backward(m, torch.randn(2, 4, 32, 32)).shape == (2, 1, 32, 32)


def _torchvision_file(tmp_path, in_channels: int = 3):
    """A torchvision-format resnet18 state dict with known values, fc included."""
    source = ResNetEncoder(in_channels, "resnet18")
    with torch.no_grad():
        for i, t in enumerate(source.state_dict().values()):
            if t.is_floating_point():
                t.copy_(torch.linspace(-1, 1, t.numel()).reshape(t.shape).roll(i))
        for mod in source.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_var.abs_().add_(0.5)
    state = dict(source.state_dict())
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return source, path


def test_resnet_unet_loads_local_torchvision_weights(tmp_path):
    source, path = _torchvision_file(tmp_path)
    m = ResNetUNet(3, 1, weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(m.encoder.state_dict()[key], value), key
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = source.eval()(x), m.encoder.eval()(x)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("in_channels", [1, 2, 4])
def test_resnet_unet_adapts_rgb_filters(tmp_path, in_channels):
    source, path = _torchvision_file(tmp_path)
    m = ResNetUNet(in_channels, 1, weights=path)
    rgb = source.conv1.weight.detach()
    assert m.encoder.conv1.weight.shape == (64, in_channels, 7, 7)
    assert torch.equal(m.encoder.conv1.weight, adapt_rgb_filters(rgb, in_channels))
    if in_channels > 3:
        assert torch.allclose(m.encoder.conv1.weight[:, :3], rgb * 3 / in_channels)
    # A constant input gives the same first-layer response as with the RGB filters.
    assert torch.allclose(m.encoder.conv1.weight.sum(dim=1), rgb.sum(dim=1), atol=1e-5)


def test_resnet_unet_bad_weights_name_the_file(tmp_path):
    _, path = _torchvision_file(tmp_path)
    state = torch.load(path, weights_only=True)
    del state["layer4.1.bn2.weight"]
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "broken.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"broken\.pth.*layer4\.1\.bn2\.weight.*extra\.weight"):
        ResNetUNet(3, 1, weights=bad)
    with pytest.raises(ValueError, match=r"resnet18\.pth.*resnet34"):
        ResNetUNet(3, 1, encoder="resnet34", weights=path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ResNetUNet(3, 1, weights=tmp_path / "missing.pth")


# --- ResDepth --------------------------------------------------------------------------


def test_resdepth_param_count_from_definition():
    m = ResDepthUNet(4, 1, base=8, depth=3)

    def block(cin: int, cout: int) -> int:
        return conv(cin, cout, 3, False) + norm(cout)

    expected = (
        block(4, 8)
        + block(8, 16)
        + block(16, 32)
        + block(32, 32)  # bottleneck
        + conv(32, 32, 2, True)
        + conv(16, 16, 2, True)
        + conv(8, 8, 2, True)  # transposed convs, additive skips
        + block(32, 16)
        + block(16, 8)
        + conv(8, 1, 3, False)  # head
    )
    assert n_params(m) == expected


def test_resdepth_forward_backward():
    m = ResDepthUNet(4, 1, base=8, depth=3)
    assert check_backward(m, torch.randn(2, 4, 32, 32)).shape == (2, 1, 32, 32)


# --- shared behaviour ------------------------------------------------------------------

SMALL = {
    "unet": dict(in_channels=4, base=8, depth=2),
    "pix2pix": dict(in_channels=4, base=8, depth=3, final=None),
    "attention_unet": dict(in_channels=4, base=8, depth=2),
    "resnet_unet": dict(in_channels=4),
    "resdepth": dict(in_channels=4, base=8, depth=2),
    "patchgan": dict(in_channels=4, base=8),
    "reviser": dict(in_channels=4, base=8),
}


def test_registry_covers_all_models():
    assert set(SMALL) == set(MODELS)
    with pytest.raises(ValueError, match="attention_unet.*pix2pix"):
        build_model("vit")


@pytest.mark.parametrize("name", ["pix2pix", "attention_unet", "resnet_unet", "resdepth"])
def test_rejects_sizes_not_divisible(name):
    m = build_model(name, **SMALL[name])
    with pytest.raises(ValueError, match="divisible by"):
        m(torch.randn(1, 4, 48, 50))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bf16_autocast_channels_last_gives_float32(name):
    m = build_model(name, **SMALL[name]).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_instance_norm_is_instancenorm2d_exactly():
    """norm="instance" (GroupNorm, one channel per group) is InstanceNorm2d(affine=True):
    same parameters, same outputs, and its checkpoints load unchanged."""
    from demgen.models.pix2pix import norm_layer

    torch.manual_seed(0)
    ref = nn.InstanceNorm2d(6, affine=True)
    ref.weight.data.uniform_(0.5, 2.0)
    ref.bias.data.normal_()
    ours = norm_layer("instance", 6)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 6, 5, 7) * 4 + 2
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours(xc), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_first_conv_computes_in_float32_under_bf16_autocast(name):
    """The input conv keeps full input precision; the next layers run in bf16."""
    from demgen.models.fp32 import Float32Conv2d

    m = build_model(name, **SMALL[name])
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert isinstance(convs[0], Float32Conv2d)  # the first conv registered is the input conv
    assert sum(isinstance(c, Float32Conv2d) for c in convs) == 1
    dtypes = []
    hooks = [c.register_forward_hook(lambda mod, i, o: dtypes.append(o.dtype)) for c in convs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m(torch.randn(2, 4, 32, 32))
    for h in hooks:
        h.remove()
    assert dtypes[0] == torch.float32 and torch.bfloat16 in dtypes[1:]
    with pytest.raises(TypeError):
        from demgen.models.fp32 import float32_input

        float32_input(nn.ConvTranspose2d(2, 2, 2))
