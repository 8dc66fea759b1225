"""Masked losses: hand-computed values, masking, and agreement with torchmetrics' SSIM."""

import math

import pytest
import torch

from demgen.losses import (
    adversarial_loss,
    gradient_loss,
    gradient_penalty,
    masked_ssim,
    pixel_loss,
    ssim_loss,
)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), len(rows[0]))


def test_pixel_losses_by_hand():
    pred, target = _t([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(1, 1, 2, 2)
    mask = _t([[1, 1], [1, 0]]).bool()  # the error of 4 is on an invalid pixel
    assert pixel_loss(pred, target, mask, "l1").item() == pytest.approx(2.0)
    assert pixel_loss(pred, target, mask, "mse").item() == pytest.approx(14 / 3)
    # Huber, delta 1: |e| - 0.5 for |e| >= 1 -> (0.5 + 1.5 + 2.5) / 3
    assert pixel_loss(pred, target, mask, "huber", 1.0).item() == pytest.approx(1.5)
    # 0.5 e^2 / delta below delta
    assert pixel_loss(pred * 0.1, target, mask, "huber", 1.0).item() == pytest.approx(
        0.5 * (0.01 + 0.04 + 0.09) / 3
    )
    with pytest.raises(ValueError):
        pixel_loss(pred, target, mask, "l2")


def test_empty_mask_gives_attached_zero():
    pred = torch.randn(1, 1, 4, 4, requires_grad=True)
    none = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    for loss in (pixel_loss(pred, pred.detach() + 1, none), gradient_loss(pred, pred + 1, none)):
        assert loss.item() == 0.0
        loss.backward()  # still in the graph


def test_gradient_loss_by_hand():
    pred, target = _t([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]]), torch.zeros(1, 1, 2, 3)
    # x pairs: |1|, |2|, |0|, |0| -> 3/4; y pairs: |0|, |-1|, |-3| -> 4/3
    assert gradient_loss(pred, target).item() == pytest.approx(3 / 4 + 4 / 3)
    mask = torch.ones(1, 1, 2, 3, dtype=torch.bool)
    mask[0, 0, 0, 2] = False  # drops the x pair (0,1)-(0,2) and the y pair (0,2)-(1,2)
    assert gradient_loss(pred, target, mask).item() == pytest.approx(1 / 3 + 1 / 2)
    # A constant offset has no gradient: the loss ignores absolute height.
    assert gradient_loss(pred + 5.0, pred).item() == 0.0


def test_ssim_by_hand_with_a_one_pixel_window():
    # Window 1: local means are the pixels, variances 0, so
    # SSIM = (2 p t + C1) / (p^2 + t^2 + C1) after rescaling by the target's range.
    target, pred = _t([[10.0, 20.0]]), _t([[15.0, 20.0]])  # -> t = [0, 1], p = [0.5, 1]
    c1 = 0.01**2
    expected = (c1 / (0.25 + c1) + 1.0) / 2
    assert masked_ssim(pred, target, window_size=1).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_matches_torchmetrics_inside_the_chip():
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    torch.manual_seed(0)
    target = torch.rand(2, 1, 32, 32)
    target[:, :, 0, 0], target[:, :, 0, 1] = 0.0, 1.0  # range exactly [0, 1]
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    ours = masked_ssim(pred, target, reduction="none")
    ref = tm_ssim(pred, target, data_range=1.0, return_full_image=True, reduction="none")[1]
    inner = (slice(None), slice(None), slice(5, -5), slice(5, -5))
    torch.testing.assert_close(ours[inner], ref[inner], atol=1e-4, rtol=1e-4)


def test_ssim_loss_masking_and_identity():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 16, 16)
    assert ssim_loss(target, target).item() == pytest.approx(0.0, abs=1e-5)
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[..., :4, :] = False
    garbage = torch.where(mask, target, torch.full_like(target, 99.0))
    # Invalid pixels, whatever they hold, change nothing.
    assert ssim_loss(garbage, target, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert ssim_loss(torch.rand_like(target), target, mask).item() > 0.5


def test_adversarial_losses():
    zero = torch.zeros(1, 1, 3, 3)
    assert adversarial_loss(zero, True, "bce").item() == pytest.approx(math.log(2))
    assert adversarial_loss(zero + 0.5, True, "lsgan").item() == pytest.approx(0.25)
    assert adversarial_loss(zero + 0.5, False, "lsgan").item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        adversarial_loss(zero, True, "wgan")


def test_gradient_penalty_of_a_linear_critic():
    x = torch.randn(3, 1, 2, 2)
    for w, expected in ((0.5, 0.0), (1.0, 1.0)):  # ||grad|| = 2 w over 4 inputs

        def critic(z, w=w):
            return (w * z).sum(dim=(1, 2, 3)).view(-1, 1)

        assert gradient_penalty(critic, x, torch.randn_like(x)).item() == pytest.approx(expected)


@pytest.mark.parametrize("name", ["pixel", "gradient", "ssim"])
def test_invalid_values_change_neither_loss_nor_gradient(name):
    """NaN, inf or 1e6 at masked-out pixels of prediction and target: the same loss and the
    same (finite) gradient as 0 there."""
    fn = {"pixel": pixel_loss, "gradient": gradient_loss, "ssim": ssim_loss}[name]
    g = torch.Generator().manual_seed(0)
    base_p, base_t = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    mask = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 4:9, 2:7] = False
    results = []
    for v in (0.0, float("nan"), float("inf"), 1e6):
        p = torch.where(mask, base_p, v).requires_grad_(True)
        t = torch.where(mask, base_t, v)
        loss = fn(p, t, mask)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(p.grad).all(), v
        results.append((float(loss), p.grad.clone()))
    for loss, grad in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6)
        torch.testing.assert_close(grad, results[0][1])
