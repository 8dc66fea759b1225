"""DRPAN for DEMs (Wang et al., 2018, ECCV, "Discriminative Region Proposal Adversarial
Networks for High-Quality Image-to-Image Translation", arXiv:1711.09554).

pix2pix (:class:`~demgen.tasks.pix2pix.Pix2PixTask`) plus a *reviser* that learns where
the generator is still wrong. Each batch:

1. **Discriminator** step, as in pix2pix.
2. **Discriminative region proposal** (no gradient needed: it only picks indices): the
   PatchGAN's logit map on the fake pair is box-filtered with a window covering
   ``region_size`` of the map's side; the window with the lowest mean logit is the most
   fake; it is mapped to the image-space square of side ``region_size`` x chip side
   centred on the same relative position.
3. **Masked pair**: the real heights with that square replaced by the generated heights,
   ``masked = where(region, G(x), y)``.
4. **Reviser** step: a critic on ``(image, heights)`` pairs trained to tell real pairs
   from masked pairs with the WGAN-GP objective
   ``mean R(x, masked) - mean R(x, y) + gp_weight * GP`` (Gulrajani et al., 2017).
5. **Generator** step: the pix2pix terms plus ``lambda_reviser * (-mean R(x, masked))``
   and ``lambda_region * L1`` inside the proposed region. ``masked`` is built from the
   generator's output *with* its graph, so both terms send gradients to the generator
   (a published implementation computed them under ``no_grad`` and lost them;
   ``tests/test_tasks.py`` checks that they arrive).

Three Adam optimizers (G, D, R) share ``lr`` and ``betas``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from demgen.losses import gradient_penalty, masked_l1
from demgen.models import build_model
from demgen.tasks.common import plateau_scheduler
from demgen.tasks.pix2pix import Pix2PixTask, set_requires_grad

#: Side of the proposed region as a fraction of the chip side (64 px of a 256 px chip).
REGION_SIZE = 0.25
#: WGAN-GP penalty weight (Gulrajani et al., 2017).
GP_WEIGHT = 10.0


class DRPANTask(Pix2PixTask):
    """pix2pix + discriminative region proposal + a WGAN-GP reviser on masked pairs.

    Args (beyond :class:`~demgen.tasks.pix2pix.Pix2PixTask`'s):
        reviser_kwargs: :class:`~demgen.models.reviser.Reviser` arguments
            (``in_channels`` = bands + 1 is set here).
        lambda_reviser: weight of the reviser's adversarial term for the generator.
        lambda_region: weight of the L1 inside the proposed region.
        gp_weight: weight of the reviser's gradient penalty.
        region_size: side of the proposed region as a fraction of the chip side.
    """

    task_name = "drpan"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any],
        *,
        generator: str = "pix2pix",
        generator_kwargs: dict[str, Any] | None = None,
        discriminator_kwargs: dict[str, Any] | None = None,
        reviser_kwargs: dict[str, Any] | None = None,
        gan_mode: str = "bce",
        lambda_gan: float = 1.0,
        lambda_l1: float = 100.0,
        mu_gradient: float = 20.0,
        lambda_reviser: float = 1.0,
        lambda_region: float = 100.0,
        gp_weight: float = GP_WEIGHT,
        region_size: float = REGION_SIZE,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        chip_size: int = 256,
        target: str = "dtm",
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        channels_last: bool = True,
        lr_patience: int = 2,
    ) -> None:
        if not 0.0 < region_size <= 1.0:
            raise ValueError(f"region_size must be in (0, 1], got {region_size}")
        super().__init__(
            image_norm,
            elevation_norm,
            generator=generator,
            generator_kwargs=generator_kwargs,
            discriminator_kwargs=discriminator_kwargs,
            gan_mode=gan_mode,
            lambda_gan=lambda_gan,
            lambda_l1=lambda_l1,
            mu_gradient=mu_gradient,
            lr=lr,
            betas=betas,
            chip_size=chip_size,
            target=target,
            pixel_size=pixel_size,
            vertical_crs=vertical_crs,
            channels_last=channels_last,
            lr_patience=lr_patience,
        )
        self.save_hyperparameters()
        self.hparams["task"] = self.task_name
        self.reviser = build_model(
            "reviser", in_channels=self.in_channels + 1, **(reviser_kwargs or {})
        )

    @torch.no_grad()
    def propose_region(self, image: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The most-fake square of each chip by the discriminator, as a (B, 1, H, W) bool mask."""
        score = self.discriminator(self.pair(image, fake.detach())).float()
        size = self.hparams.region_size
        (h, w), (H, W) = score.shape[-2:], fake.shape[-2:]
        kh, kw = max(1, min(h, round(size * h))), max(1, min(w, round(size * w)))
        pooled = F.avg_pool2d(score, (kh, kw), stride=1)  # mean logit of every window
        idx = pooled.flatten(1).argmin(dim=1)
        i = torch.div(idx, pooled.shape[-1], rounding_mode="floor")
        j = idx % pooled.shape[-1]
        # Window centre in map cells -> image pixels, then a square of side size * H.
        sh, sw = max(1, round(size * H)), max(1, round(size * W))
        top = ((i + kh / 2) * H / h - sh / 2).round().long().clamp(0, H - sh)
        left = ((j + kw / 2) * W / w - sw / 2).round().long().clamp(0, W - sw)
        rows = torch.arange(H, device=fake.device).view(1, H, 1)
        cols = torch.arange(W, device=fake.device).view(1, 1, W)
        top, left = top.view(-1, 1, 1), left.view(-1, 1, 1)
        region = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)
        return region.unsqueeze(1)

    @staticmethod
    def masked_heights(target: torch.Tensor, fake: torch.Tensor, region: torch.Tensor):
        """The real heights with the proposed region replaced by the generated ones
        (keeps ``fake``'s graph)."""
        return torch.where(region, fake, target.to(fake.dtype))

    def reviser_loss(
        self, image: torch.Tensor, target: torch.Tensor, masked: torch.Tensor
    ) -> torch.Tensor:
        """WGAN-GP critic loss of the reviser: real pairs high, masked pairs low."""
        real_pair = self.pair(image, target)
        fake_pair = self.pair(image, masked.detach())
        wasserstein = self.reviser(fake_pair).mean() - self.reviser(real_pair).mean()
        return wasserstein + self.hparams.gp_weight * gradient_penalty(
            self.reviser, real_pair, fake_pair
        )

    def generator_terms(
        self,
        batch: dict[str, torch.Tensor],
        fake: torch.Tensor,
        region: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """pix2pix's terms plus ``reviser`` and ``region_l1`` (``region`` from
        :meth:`propose_region`, proposed here when not given)."""
        hp = self.hparams
        terms = super().generator_terms(batch, fake)
        image, target, mask = batch["image"], batch["target"], batch["mask"]
        if region is None:
            region = self.propose_region(image, fake)
        masked = self.masked_heights(target, fake, region)
        terms["reviser"] = -self.reviser(self.pair(image, masked)).mean()
        terms["region_l1"] = masked_l1(fake, target, mask & region)
        terms["loss"] = (
            terms["loss"]
            + hp.lambda_reviser * terms["reviser"]
            + hp.lambda_region * terms["region_l1"]
        )
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d, opt_r = self.optimizers()
        batch = self.clean_batch(batch)
        image, target, mask = batch["image"], batch["target"], batch["mask"]
        fake = self.hide_invalid(self(image), target, mask)

        loss_d = self.discriminator_loss(image, target, fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        region = self.propose_region(image, fake)
        loss_r = self.reviser_loss(image, target, self.masked_heights(target, fake, region))
        opt_r.zero_grad(set_to_none=True)
        self.manual_backward(loss_r)
        opt_r.step()

        set_requires_grad(self.discriminator, False)
        set_requires_grad(self.reviser, False)
        terms = self.generator_terms(batch, fake, region)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        opt_g.step()
        set_requires_grad(self.discriminator, True)
        set_requires_grad(self.reviser, True)

        self._log_train({"d_loss": loss_d, "r_loss": loss_r, **terms}, image.shape[0])

    def configure_optimizers(self):
        opts, scheds = super().configure_optimizers()
        opt_r = self._adam(self.reviser)
        return [*opts, opt_r], [*scheds, plateau_scheduler(opt_r, self.hparams.lr_patience)]
