"""pix2pix DEM -> image (Isola et al. 2017, arXiv:1611.07004): the U-Net G of
:class:`~demgen.tasks.dem2image.Dem2ImageTask` and a PatchGAN D on ``concat(relief features,
image)``; generator loss ``lambda_gan adv + lambda_l1 L1_refl`` (``lambda_l1 = 100``), two
Adams ``2e-4, (0.5, 0.999)`` stepped by hand, D then G, as in the original recipe. Invalid
pixels of the fake image take the real values, so D cannot tell pairs apart by them."""

from __future__ import annotations

from typing import Any

import torch

from demgen.data.normalize import default_reflectance_scale
from demgen.losses import GAN_MODES, adversarial_loss
from demgen.models import build_model
from demgen.tasks.common import plateau_scheduler
from demgen.tasks.dem2image import Dem2ImageTask


class Dem2ImagePix2PixTask(Dem2ImageTask):
    """pix2pix DEM -> image: U-Net G, PatchGAN D on ``concat(features, image)``.

    Args (beyond :class:`Dem2ImageTask`'s): ``discriminator_kwargs`` (PatchGAN arguments),
    ``gan_mode`` (``bce`` or ``lsgan``), ``lambda_gan`` (1), ``lambda_l1`` (100), ``lr``
    and ``betas`` of both Adams (2e-4, (0.5, 0.999)). The default generator is the pix2pix
    U-Net of depth 7 (``generator_kwargs`` change it).
    """

    task_name = "dem2image_pix2pix"

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
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        landcover_classes: int = 0,
        chip_size: int = 128,
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        image_dtype: str = "uint16",
        reflectance_scale: float | None = None,
        sun_azimuth: float = 150.0,
        sun_elevation: float = 40.0,
        relief_radius: int = 8,
        channels_last: bool = True,
        lr_patience: int = 2,
    ) -> None:
        # explicit arguments, no **kwargs: LightningCLI links only the arguments a task has
        if gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {gan_mode!r}")
        if generator == "pix2pix" and not generator_kwargs:
            generator_kwargs = {"depth": 7, "base": 64, "max_width": 512}
        super().__init__(
            image_norm, elevation_norm, landcover_classes=landcover_classes,
            generator=generator, generator_kwargs=generator_kwargs, lr=lr,
            chip_size=chip_size, pixel_size=pixel_size, vertical_crs=vertical_crs,
            image_dtype=image_dtype, reflectance_scale=reflectance_scale,
            sun_azimuth=sun_azimuth, sun_elevation=sun_elevation, relief_radius=relief_radius,
            channels_last=channels_last, lr_patience=lr_patience,
        )  # fmt: skip
        self.save_hyperparameters()
        if self.hparams.get("reflectance_scale") is None:
            self.hparams["reflectance_scale"] = default_reflectance_scale(self.hparams.image_dtype)
        self.automatic_optimization = False
        self.discriminator = build_model("patchgan", in_channels=self.in_channels + self.n_bands,
                                         **(discriminator_kwargs or {}))  # fmt: skip

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        x, target, mask, true = self.batch_roles(batch)
        fake = torch.where(mask, self(x), target)  # invalid pixels: the real ones, no gradient

        real_pair, fake_pair = torch.cat([x, target], 1), torch.cat([x, fake], 1)
        loss_d = 0.5 * (adversarial_loss(self.discriminator(real_pair), True, hp.gan_mode)
                        + adversarial_loss(self.discriminator(fake_pair.detach()), False,
                                           hp.gan_mode))  # fmt: skip
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        adv = adversarial_loss(self.discriminator(fake_pair), True, hp.gan_mode)
        l1 = self.l1_refl(fake, true, mask)
        loss_g = hp.lambda_gan * adv + hp.lambda_l1 * l1
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        for p in self.discriminator.parameters():
            p.requires_grad_(True)
        bs = x.shape[0]
        for name, v in (("d_loss", loss_d), ("adv", adv), ("l1", l1), ("loss", loss_g)):
            key = "train_loss" if name == "loss" else f"train_{name}"
            self.log(key, v.detach(), prog_bar=name in ("loss", "l1"), batch_size=bs)

    def on_validation_epoch_end(self) -> None:
        score = self.val_metrics.compute()["l1_refl"]
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking or not torch.isfinite(score):
            return  # manual optimization: Lightning does not step the schedulers
        schedulers = self.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            sched.step(score)

    def configure_optimizers(self):
        hp = self.hparams
        opts = [torch.optim.Adam(m.parameters(), lr=hp.lr, betas=tuple(hp.betas))
                for m in (self.model, self.discriminator)]  # fmt: skip
        return opts, [plateau_scheduler(o, hp.lr_patience) for o in opts]


__all__ = ["Dem2ImagePix2PixTask"]
