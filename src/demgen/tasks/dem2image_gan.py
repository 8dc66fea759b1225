"""pix2pix DEM -> image (Isola et al. 2017, arXiv:1611.07004): the U-Net G of
:class:`~demgen.tasks.dem2image.Dem2ImageTask` and a PatchGAN D on ``concat(relief features,
image)``; generator loss ``lambda_gan adv + lambda_l1 L1_refl`` (``lambda_l1 = 100``), two
Adams ``2e-4, (0.5, 0.999)`` stepped by hand, D then G, as in the original recipe. Invalid
pixels of the fake image take the real values, so D cannot tell pairs apart by them."""

from __future__ import annotations

from typing import Any

import torch

from demgen.data.normalize import default_reflectance_scale
from demgen.losses import GAN_MODES
from demgen.models import build_model
from demgen.tasks.dem2image import Dem2ImageTask
from demgen.tasks.gan import gan_optimizers, gan_step, step_plateaus


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
        x, target, mask, true = self.batch_roles(batch)
        fake = torch.where(mask, self(x), target)  # invalid pixels: the real ones, no gradient
        gan_step(self, x, target, fake, lambda f: self.l1_refl(f, true, mask))

    def on_validation_epoch_end(self) -> None:
        score = self.val_metrics.compute()["l1_refl"]
        super().on_validation_epoch_end()
        step_plateaus(self, score)

    def configure_optimizers(self):
        return gan_optimizers(self)


__all__ = ["Dem2ImagePix2PixTask"]
