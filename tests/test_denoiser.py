"""The conditional denoising U-Net, classifier-free guidance and EMA weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from demgen.models.denoiser import ConditionalDenoiser, timestep_embedding
from demgen.models.ema import ema_decay, ema_model
from demgen.schedulers import DDPMScheduler, cfg_drop_mask, guided_output


def randomized(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give the zero-initialised layers (outputs, null embeddings) random values, so an
    untrained net's output depends on everything it is given."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net.eval()


def small(**kw) -> ConditionalDenoiser:
    args = dict(target_channels=1, cond_channels=3, base_channels=16, channel_mults=(1, 2))
    return ConditionalDenoiser(**(args | kw))


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 16, 16, generator=g)
    cond = torch.randn(2, 3, 16, 16, generator=g)
    attrs = torch.rand(2, 5, generator=g)
    return x, torch.tensor([10, 700]), cond, attrs


def test_timestep_embedding_shape_and_values():
    emb = timestep_embedding(torch.tensor([0, 1, 999]), 32)
    assert emb.shape == (3, 32)
    assert torch.equal(emb[0, :16], torch.ones(16)) and torch.equal(emb[0, 16:], torch.zeros(16))
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


@pytest.mark.parametrize("hw", [(16, 16), (32, 32), (24, 16), (17, 23)])
@pytest.mark.parametrize("mults", [(1, 2), (1, 2, 2)])
def test_output_shape_equals_the_target(one_thread, hw, mults):
    net = small(target_channels=2, cond_channels=4, channel_mults=mults, attr_dim=3)
    x, cond = torch.randn(2, 2, *hw), torch.randn(2, 4, *hw)
    out = net(x, torch.tensor([1, 999]), cond=cond, attrs=torch.rand(2, 3))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output layer


def test_unconditional_net_and_scalar_step(one_thread):
    net = randomized(small(cond_channels=0, base_channels=8, attention=False))
    out = net(torch.randn(3, 1, 16, 16), torch.tensor(5))
    assert out.shape == (3, 1, 16, 16)


def test_output_depends_on_step_condition_and_attributes(one_thread, inputs):
    x, t, cond, attrs = inputs
    net = randomized(small(attr_dim=5))
    with torch.no_grad():
        ref = net(x, t, cond, attrs)
        assert not torch.allclose(ref, net(x, t + 200, cond, attrs), atol=1e-4)
        assert not torch.allclose(ref, net(x, t, cond.flip(-1), attrs), atol=1e-4)
        assert not torch.allclose(ref, net(x, t, cond, attrs.flip(0)), atol=1e-4)
        # a dropped condition is ignored, whatever it holds, and equals a missing one
        drop = torch.ones(2, dtype=torch.bool)
        a = net(x, t, cond, attrs, drop_cond=drop, drop_attrs=drop)
        b = net(x, t, cond * 5 + 1, attrs.flip(0), drop_cond=drop, drop_attrs=drop)
        assert torch.equal(a, b)
        assert torch.allclose(a, net(x, t), atol=1e-6)
        assert not torch.allclose(ref, a, atol=1e-4)
        # dropping is per sample
        half = torch.tensor([True, False])
        mixed = net(x, t, cond, attrs, drop_cond=half, drop_attrs=half)
        assert torch.allclose(mixed[0], a[0], atol=1e-6)
        assert torch.allclose(mixed[1], ref[1], atol=1e-6)


def test_samples_are_independent_in_a_batch(one_thread, inputs):
    x, t, cond, attrs = inputs
    net = randomized(small(attr_dim=5))
    with torch.no_grad():
        both = net(x, t, cond, attrs)
        one = net(x[1:], t[1:], cond[1:], attrs[1:])
    assert torch.allclose(both[1:], one, atol=1e-5)


@pytest.mark.parametrize("keep_cond", [False, True])
def test_guidance_scale_0_is_unconditional_and_1_conditional(one_thread, inputs, keep_cond):
    x, t, cond, attrs = inputs
    net = randomized(small(attr_dim=5))
    yes, no = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        c = net(x, t, cond, attrs)
        u = net(x, t, cond, attrs, drop_cond=no if keep_cond else yes, drop_attrs=yes)
        g0 = guided_output(net, x, t, cond, attrs, 0.0, keep_cond=keep_cond)
        g1 = guided_output(net, x, t, cond, attrs, 1.0, keep_cond=keep_cond)
        g3 = guided_output(net, x, t, cond, attrs, 3.0, keep_cond=keep_cond)
    assert torch.equal(g0, u)
    assert torch.equal(g1, c)
    assert torch.allclose(g3, u + 3.0 * (c - u), atol=1e-5)  # the one batched pass of 2B


def test_guidance_counts_one_batched_forward(inputs):
    x, t, cond, attrs = inputs
    net = small(attr_dim=5)
    calls = []
    net.register_forward_hook(lambda m, a, out: calls.append(out.shape[0]))
    guided_output(net, x, t, cond, attrs, 2.0)
    assert calls == [4]


def test_cfg_drop_mask_rate():
    mask = cfg_drop_mask(10_000, 0.2, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - 0.2) < 0.02


def test_a_tiny_training_loop_lowers_the_loss(one_thread):
    """Toy conditional task: the target is the conditioning image blurred (16 px)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = ConditionalDenoiser(1, 1, base_channels=8, channel_mults=(1, 2), attention=False)
    sched = DDPMScheduler(prediction_type="v_prediction")
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        cond = torch.randn(8, 1, 16, 16, generator=g)
        x0 = F.avg_pool2d(cond, 3, stride=1, padding=1, count_include_pad=False)
        noise = torch.randn(x0.shape, generator=g)
        t = sched.sample_timesteps(8, generator=g)
        drop = cfg_drop_mask(8, 0.1, g)
        pred = net(sched.add_noise(x0, noise, t), t, cond=cond, drop_cond=drop)
        loss = F.mse_loss(pred, sched.training_target(x0, noise, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)


def test_ema_of_constant_weights_equals_them():
    net = small(attr_dim=2)
    ema = ema_model(net, max_decay=0.99)
    for _ in range(5):
        ema.update_parameters(net)
    for a, b in zip(ema.module.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in ema.parameters())


def test_ema_follows_the_warm_up_decay():
    net = nn.Linear(1, 1, bias=False)
    ema = ema_model(net, max_decay=0.9, warmup=10.0)
    with torch.no_grad():
        net.weight.fill_(0.0)
        ema.update_parameters(net)  # first update copies: 0
        net.weight.fill_(1.0)
        ema.update_parameters(net)  # n = 1: decay 2/11
    assert ema.module.weight.item() == pytest.approx(1 - 2 / 11)
    assert ema_decay(0, 0.9) == pytest.approx(0.1)
    assert ema_decay(10_000, 0.9) == 0.9
    with pytest.raises(ValueError):
        ema_model(net, max_decay=1.0)
