"""DEM regression: image -> heights with any generator, masked losses, metrics in metres.

The constructor arguments are the whole configuration and are saved in every
checkpoint, together with the band names, the normalization statistics and the task
name, so a checkpoint alone turns an image into metres.

The loss is a masked pixel loss (L1, MSE or Huber) plus, optionally,
``gradient_weight`` x the gradient loss of Sat2DEM and ``ssim_weight`` x (1 - SSIM);
see :mod:`demgen.losses`.
"""

from __future__ import annotations

from typing import Any

import torch

from demgen.losses import PIXEL_LOSSES, gradient_loss, pixel_loss, ssim_loss
from demgen.models.unet import UNet
from demgen.tasks.common import DEMTask, build_generator, plateau_optimizer_config


class DEMRegressionTask(DEMTask):
    """Train a generator to regress normalized heights; report MAE, RMSE, bias, R2, SSIM in metres.

    Args:
        image_norm, elevation_norm: normalization dicts (the chip store's manifest).
        generator: model name in :mod:`demgen.models` (``unet``, ``pix2pix``,
            ``attention_unet``, ``resnet_unet``, ``resdepth``); built with
            ``in_channels`` = number of bands, ``out_channels=1`` and ``generator_kwargs``.
        generator_kwargs: the generator's constructor arguments. With ``generator="unet"``
            and none given, ``base``, ``depth``, ``stem`` and ``max_width`` are used.
        base, depth, stem, max_width: the default U-Net's shape.
        lr, weight_decay: AdamW; the learning rate halves when the monitored metric
            (:attr:`~demgen.tasks.common.DEMTask.monitor`: ``val_mae_m``, or
            ``val_mae_rel_m`` for per-chip normalizations) has not improved for
            ``lr_patience`` epochs (ReduceLROnPlateau).
        loss: ``l1``, ``mse`` or ``huber`` on valid pixels.
        gradient_weight: weight of the gradient loss (0 disables it).
        ssim_weight: weight of the SSIM loss ``1 - SSIM`` (0 disables it).
        chip_size, target, pixel_size: what the model was trained on (used by prediction:
            the default window, the output's band name, the resolution check).
        vertical_crs: the vertical datum of the training heights (``unknown`` where not
            declared), written as the ``vertical_crs`` tag of every predicted raster.
        channels_last: run convolutions in channels-last memory format.
    """

    task_name = "regression"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any],
        *,
        generator: str = "unet",
        generator_kwargs: dict[str, Any] | None = None,
        base: int = 32,
        depth: int = 4,
        stem: int = 1,
        max_width: int = 256,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        loss: str = "l1",
        gradient_weight: float = 0.0,
        ssim_weight: float = 0.0,
        chip_size: int = 128,
        target: str = "dtm",
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        channels_last: bool = True,
        lr_patience: int = 2,
    ) -> None:
        super().__init__()
        if loss not in PIXEL_LOSSES:
            raise ValueError(f"loss must be l1, mse or huber, got {loss!r}")
        self.save_hyperparameters()
        self._setup(image_norm, elevation_norm)
        if generator == "unet" and not generator_kwargs:
            self.model = UNet(
                self.in_channels, 1, base=base, depth=depth, stem=stem, max_width=max_width
            )
        else:
            self.model = build_generator(generator, self.in_channels, generator_kwargs)

    def compute_loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The loss terms (normalized units) and their weighted sum under ``loss``."""
        hp = self.hparams
        terms = {"pixel": pixel_loss(pred, target, mask, hp.loss)}
        total = terms["pixel"]
        if hp.gradient_weight:
            terms["gradient"] = gradient_loss(pred, target, mask)
            total = total + hp.gradient_weight * terms["gradient"]
        if hp.ssim_weight:
            terms["ssim"] = ssim_loss(pred, target, mask)
            total = total + hp.ssim_weight * terms["ssim"]
        terms["loss"] = total
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        batch = self.clean_batch(batch)
        terms = self.compute_loss(self(batch["image"]), batch["target"], batch["mask"])
        bs = batch["image"].shape[0]
        self.log("train_loss", terms["loss"], prog_bar=True, batch_size=bs)
        for name in ("gradient", "ssim"):
            if name in terms:
                self.log(f"train_{name}", terms[name], batch_size=bs)
        return terms["loss"]

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=True,  # one kernel over all parameters instead of a dozen ops per tensor
        )
        return plateau_optimizer_config(opt, self.hparams.lr_patience, self.monitor)
