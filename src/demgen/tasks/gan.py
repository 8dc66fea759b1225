"""The conditional-GAN step shared by the image-output tasks (DEM -> image, temporal).

pix2pix (Isola et al. 2017, arXiv:1611.07004) with manual optimization, D then G, each
batch: the discriminator sees ``concat(x, image)`` pairs,

- D: ``0.5 [adv(D(x, real), True) + adv(D(x, fake.detach()), False)]``;
- G: ``lambda_gan adv(D(x, fake), True) + lambda_l1 L1``, with D frozen,

where ``fake`` already carries the real values on invalid pixels (no gradient through
them, nothing for D to tell pairs apart by). ``lambda_gan = 0`` skips D entirely (pure L1).
Both Adams get a ReduceLROnPlateau stepped by :func:`step_plateaus` at validation end
(Lightning does not step schedulers under manual optimization).
"""

from __future__ import annotations

from typing import Any

import torch

from demgen.losses import adversarial_loss
from demgen.tasks.common import plateau_scheduler


def gan_step(
    task: Any, x: torch.Tensor, target: torch.Tensor, fake: torch.Tensor, l1_fn: Any
) -> dict[str, torch.Tensor]:
    """One D and one G update of ``task`` (``model``, ``discriminator``, hparams
    ``gan_mode``, ``lambda_gan``, ``lambda_l1``); ``l1_fn(fake)`` is the task's masked L1.
    Logs and returns ``d_loss``, ``adv``, ``l1`` and ``loss``."""
    hp = task.hparams
    opt_g, opt_d = task.optimizers()
    gan = hp.lambda_gan > 0
    loss_d = adv = torch.zeros((), device=x.device)
    if gan:
        real_pair, fake_pair = torch.cat([x, target], 1), torch.cat([x, fake], 1)
        loss_d = 0.5 * (adversarial_loss(task.discriminator(real_pair), True, hp.gan_mode)
                        + adversarial_loss(task.discriminator(fake_pair.detach()), False,
                                           hp.gan_mode))  # fmt: skip
        opt_d.zero_grad(set_to_none=True)
        task.manual_backward(loss_d)
        opt_d.step()
        task.discriminator.requires_grad_(False)
        adv = adversarial_loss(task.discriminator(fake_pair), True, hp.gan_mode)
    l1 = l1_fn(fake)
    loss_g = hp.lambda_gan * adv + hp.lambda_l1 * l1
    opt_g.zero_grad(set_to_none=True)
    task.manual_backward(loss_g)
    opt_g.step()
    task.discriminator.requires_grad_(True)
    terms = {"d_loss": loss_d, "adv": adv, "l1": l1, "loss": loss_g}
    for name, v in terms.items():
        key = "train_loss" if name == "loss" else f"train_{name}"
        task.log(key, v.detach(), prog_bar=name in ("loss", "l1"), batch_size=x.shape[0])
    return terms


def step_plateaus(task: Any, score: torch.Tensor) -> None:
    """Step every plateau scheduler of a manually optimized ``task`` on ``score``."""
    if task.trainer.sanity_checking or not torch.isfinite(score):
        return
    schedulers = task.lr_schedulers()
    for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
        sched.step(score)


def gan_optimizers(task: Any) -> tuple[list, list]:
    """Adam (``lr``, ``betas``) for G and D, each with a plateau scheduler."""
    hp = task.hparams
    opts = [torch.optim.Adam(m.parameters(), lr=hp.lr, betas=tuple(hp.betas))
            for m in (task.model, task.discriminator)]  # fmt: skip
    return opts, [plateau_scheduler(o, hp.lr_patience) for o in opts]


__all__ = ["gan_optimizers", "gan_step", "step_plateaus"]
