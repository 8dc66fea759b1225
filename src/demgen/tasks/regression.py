"""DEM regression: image -> heights with a U-Net, masked L1 loss, metrics in metres.

The constructor arguments are the whole configuration and are saved in every
checkpoint, together with the band names and the normalization statistics, so a
checkpoint alone turns an image into metres.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError

from demgen.data.normalize import norm_from_dict
from demgen.models.unet import UNet


class DEMRegressionTask(L.LightningModule):
    """Train a U-Net to regress normalized heights; report MAE, RMSE and bias in metres."""

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any],
        *,
        base: int = 32,
        depth: int = 4,
        stem: int = 1,
        max_width: int = 256,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        loss: str = "l1",
        chip_size: int = 128,
        target: str = "dtm",
        pixel_size: float | None = None,
        channels_last: bool = True,
        lr_patience: int = 2,
    ) -> None:
        super().__init__()
        if loss not in ("l1", "mse", "huber"):
            raise ValueError(f"loss must be l1, mse or huber, got {loss!r}")
        self.save_hyperparameters()
        self.image_norm = norm_from_dict(image_norm)
        self.elevation_norm = norm_from_dict(elevation_norm)
        self.model = UNet(
            len(self.image_norm.bands), 1, base=base, depth=depth, stem=stem, max_width=max_width
        )
        self.val_mae = MeanAbsoluteError()
        self.val_rmse = MeanSquaredError(squared=False)
        self.val_bias = MeanMetric()

    @property
    def bands(self) -> list[str]:
        return self.image_norm.bands

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return self.model.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized image (B, bands, H, W) -> normalized heights (B, 1, H, W)."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def predict_metres(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized image -> heights in metres (float32)."""
        return self.elevation_norm.inverse(self(x).float())

    def on_fit_start(self) -> None:
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pred, target = pred.float()[mask], target[mask]
        if pred.numel() == 0:
            return pred.sum() * 0.0
        if self.hparams.loss == "l1":
            return F.l1_loss(pred, target)
        if self.hparams.loss == "mse":
            return F.mse_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=0.05)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["image"]), batch["target"], batch["mask"])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Per-chip normalizations (global-shift) carry each chip's offset in metres.
        offset = batch.get("offset")
        if offset is not None:
            offset = offset.view(-1, 1, 1, 1).float()
        pred = self.elevation_norm.inverse(self(batch["image"]).float(), offset)
        true = self.elevation_norm.inverse(batch["target"], offset)
        m = batch["mask"]
        if m.any():
            self.val_mae.update(pred[m], true[m])
            self.val_rmse.update(pred[m], true[m])
            self.val_bias.update(pred[m] - true[m])

    def on_validation_epoch_end(self) -> None:
        self.log("val_mae_m", self.val_mae.compute(), prog_bar=True)
        self.log("val_rmse_m", self.val_rmse.compute())
        self.log("val_bias_m", self.val_bias.compute())
        for metric in (self.val_mae, self.val_rmse, self.val_bias):
            metric.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=True,  # one kernel over all parameters instead of a dozen ops per tensor
        )
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=0.5, patience=self.hparams.lr_patience
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": "val_mae_m", "interval": "epoch"},
        }
