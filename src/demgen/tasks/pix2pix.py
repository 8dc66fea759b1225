"""pix2pix for DEMs: a conditional GAN from image to heights (Isola et al., 2017, CVPR,
"Image-to-Image Translation with Conditional Adversarial Networks", arXiv:1611.07004).

The generator (by default the pix2pix U-Net, tanh output) maps the normalized image to
normalized heights; a PatchGAN discriminator judges ``concat(image, heights)`` pairs.
Objectives, all masked by validity:

- discriminator: ``0.5 [adv(D(x, y), real) + adv(D(x, G(x)), fake)]``;
- generator: ``lambda_gan adv(D(x, G(x)), real) + lambda_l1 L1(G(x), y)
  + mu_gradient grad(G(x), y)``

with ``adv`` BCE on logits or least squares (``gan_mode``), ``lambda_l1 = 100`` as in the
paper, and the Sat2DEM gradient loss weighted ``mu_gradient = 20`` (Panagiotou et al.,
2020; 0 disables it). Invalid pixels are hidden from the discriminator by giving the
fake pair the real pair's values there, so it cannot tell pairs apart by them and sends
no gradient through them. Two Adam optimizers (lr 2e-4, betas 0.5/0.999, the paper's
settings) are stepped by hand, D then G, each batch; both learning rates halve when
``val_mae_m`` stalls for ``lr_patience`` epochs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from demgen.losses import GAN_MODES, adversarial_loss, gradient_loss, masked_l1
from demgen.models import build_model
from demgen.tasks.common import DEMTask, build_generator, plateau_scheduler


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze (``False``) or unfreeze a network's parameters."""
    for p in module.parameters():
        p.requires_grad_(flag)


class Pix2PixTask(DEMTask):
    """Conditional GAN image -> heights with a PatchGAN discriminator and masked L1.

    Args:
        image_norm, elevation_norm: normalization dicts (the chip store's manifest).
        generator, generator_kwargs: generator name in :mod:`demgen.models` and its
            arguments (``in_channels``/``out_channels`` are set from the bands).
        discriminator_kwargs: :class:`~demgen.models.patchgan.PatchGAN` arguments
            (``in_channels`` = bands + 1 is set here).
        gan_mode: ``bce`` or ``lsgan``.
        lambda_gan: weight of the generator's adversarial term (1).
        lambda_l1: weight of the masked L1 term (100, Isola et al.).
        mu_gradient: weight of the gradient loss (20; 0 disables it).
        lr, betas: Adam settings of both networks.
        chip_size, target, pixel_size, vertical_crs, channels_last: as for
            :class:`~demgen.tasks.regression.DEMRegressionTask`.
        lr_patience: ReduceLROnPlateau patience on the monitored metric (epochs; see
            :attr:`~demgen.tasks.common.DEMTask.monitor`).
    """

    task_name = "pix2pix"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any],
        *,
        generator: str = "pix2pix",
        generator_kwargs: dict[str, Any] | None = None,
        discriminator_kwargs: dict[str, Any] | None = None,
        gan_mode: str = "bce",
        lambda_gan: float = 1.0,
        lambda_l1: float = 100.0,
        mu_gradient: float = 20.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        chip_size: int = 256,
        target: str = "dtm",
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        channels_last: bool = True,
        lr_patience: int = 2,
    ) -> None:
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {gan_mode!r}")
        self.save_hyperparameters()
        self._setup(image_norm, elevation_norm)
        self._build_networks()

    def _build_networks(self) -> None:
        hp = self.hparams
        self.automatic_optimization = False
        self.model = build_generator(hp.generator, self.in_channels, hp.generator_kwargs)
        self.discriminator = build_model(
            "patchgan", in_channels=self.in_channels + 1, **(hp.discriminator_kwargs or {})
        )

    # -- pieces -----------------------------------------------------------------------

    @staticmethod
    def pair(image: torch.Tensor, heights: torch.Tensor) -> torch.Tensor:
        """The conditional pair the critics see: ``concat(image, heights)`` on channels."""
        return torch.cat([image, heights.to(image.dtype)], dim=1)

    @staticmethod
    def hide_invalid(fake: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """``fake`` where the reference is valid, the reference elsewhere."""
        return torch.where(mask, fake, target.to(fake.dtype))

    def discriminator_loss(
        self, image: torch.Tensor, target: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        """``0.5 [adv(D(x, y), real) + adv(D(x, fake), fake)]``; ``fake`` is detached."""
        mode = self.hparams.gan_mode
        real = adversarial_loss(self.discriminator(self.pair(image, target)), True, mode)
        fake = adversarial_loss(self.discriminator(self.pair(image, fake.detach())), False, mode)
        return 0.5 * (real + fake)

    def generator_terms(
        self, batch: dict[str, torch.Tensor], fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The generator's loss terms and their weighted sum ``loss``.

        ``fake`` is ``G(image)`` with invalid pixels already hidden (see :meth:`hide_invalid`).
        """
        hp = self.hparams
        image, target, mask = batch["image"], batch["target"], batch["mask"]
        terms = {
            "adv": adversarial_loss(self.discriminator(self.pair(image, fake)), True, hp.gan_mode),
            "l1": masked_l1(fake, target, mask),
        }
        loss = hp.lambda_gan * terms["adv"] + hp.lambda_l1 * terms["l1"]
        if hp.mu_gradient:
            terms["gradient"] = gradient_loss(fake, target, mask)
            loss = loss + hp.mu_gradient * terms["gradient"]
        terms["loss"] = loss
        return terms

    # -- training ---------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        batch = self.clean_batch(batch)
        image, target, mask = batch["image"], batch["target"], batch["mask"]
        fake = self.hide_invalid(self(image), target, mask)

        loss_d = self.discriminator_loss(image, target, fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        set_requires_grad(self.discriminator, False)
        terms = self.generator_terms(batch, fake)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        opt_g.step()
        set_requires_grad(self.discriminator, True)

        self._log_train({"d_loss": loss_d, **terms}, image.shape[0])

    def _log_train(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        for name, value in terms.items():
            key = "train_loss" if name == "loss" else f"train_{name}"
            self.log(key, value.detach(), prog_bar=name in ("loss", "l1"), batch_size=batch_size)

    def on_validation_epoch_end(self) -> None:
        score = self.val_metrics.compute()[self.monitor.removeprefix("val_")]
        super().on_validation_epoch_end()
        # Manual optimization: Lightning does not step the schedulers, so do it here.
        if self.trainer.sanity_checking or not torch.isfinite(score):
            return
        schedulers = self.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            sched.step(score)

    def _adam(self, module: nn.Module) -> torch.optim.Adam:
        return torch.optim.Adam(
            module.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas)
        )

    def configure_optimizers(self):
        opts = [self._adam(self.model), self._adam(self.discriminator)]
        return opts, [plateau_scheduler(o, self.hparams.lr_patience) for o in opts]
