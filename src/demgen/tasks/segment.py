"""Building segmentation: image -> probability of a building, per pixel.

The judge of spatio-temporal synthesis (:mod:`demgen.tasks.temporal`): trained on the TRUE
images of a time series (every date's image with that date's building mask), it can then be
run on synthesized images to ask whether the buildings the generator was told to draw are
there. A U-Net (:class:`~demgen.models.unet.UNet`, one logit per pixel) on the image in the
store's image normalization; the loss is binary cross-entropy on the logits plus the soft
Dice loss (Milletari et al. 2016), both over valid pixels only; AdamW, the learning rate
halved on a ``val_loss`` plateau.

Batches are the time-pair batches of :class:`demgen.data.time_datasets.TimePairDataset`:
the input is ``target`` (the true image at date t) and the label ``mask_t``; a frame batch
``{"image", "mask_t", "mask"}`` works as well (``image`` is read where there is no
``target``). ``mask`` (B, 1, H, W) bool marks the valid pixels.

Validation logs ``val_loss`` (BCE + Dice over the whole split: the monitored metric, which
``demgen fit``'s checkpoint and early stopping minimize), ``val_f1``, ``val_iou``,
``val_precision`` and ``val_recall`` of the mask thresholded at 0.5, from counts summed over
the split (a split without buildings and no false positive scores 1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from demgen.data.fill import fill_invalid, image_fill_value
from demgen.data.normalize import norm_from_dict
from demgen.models import build_model
from demgen.tasks.base import ContractTask
from demgen.tasks.common import plateau_optimizer_config, stored_fill
from demgen.tasks.spec import LayerSpec, TaskSpec

#: Input and output layer names.
IMAGE, BUILDINGS = "image", "buildings"
#: Generator arguments used when ``generator_kwargs`` is empty.
DEFAULT_GENERATOR_KWARGS: dict[str, Any] = {"base": 32, "depth": 4, "max_width": 256}


def soft_dice_loss(logits: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - (2 sum(p y) + 1) / (sum p + sum y + 1)`` over valid pixels of the batch, with
    ``p = sigmoid(logits)`` (the +1 keeps an empty mask predicted empty at loss 0)."""
    p = torch.sigmoid(logits.float()) * mask
    y = label.float() * mask
    return 1.0 - (2.0 * (p * y).sum() + 1.0) / (p.sum() + y.sum() + 1.0)


def masked_bce(logits: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, averaged over valid pixels."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), label.float(), reduction="none")
    return (bce * mask).sum() / mask.sum().clamp(min=1)


class MaskMetrics(Metric):
    """Confusion counts of the mask at ``p >= threshold`` over valid pixels, and the summed
    loss, over all updates; F1, IoU, precision, recall and the mean loss."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        for name in ("tp", "fp", "fn", "loss", "batches"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prob: torch.Tensor, label: torch.Tensor, mask: torch.Tensor,
               loss: torch.Tensor | None = None) -> None:  # fmt: skip
        m = mask.bool()
        pred = (prob.detach() >= self.threshold) & m
        true = (label.detach() > 0.5) & m
        self.tp += (pred & true).sum()
        self.fp += (pred & ~true).sum()
        self.fn += (~pred & true).sum()
        if loss is not None:
            self.loss += loss.detach().double()
            self.batches += 1

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn = self.tp, self.fp, self.fn
        one = torch.ones((), dtype=torch.float64, device=tp.device)

        def ratio(num, den):
            return one if den == 0 else num / den

        out = {
            "loss": self.loss / self.batches.clamp(min=1),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "iou": ratio(tp, tp + fp + fn),
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
        }
        return {k: v.float() for k, v in out.items()}


class SegmentTask(ContractTask):
    """Image (stored units) -> building probability: U-Net, BCE + soft Dice.

    Args:
        image_norm: the store's image normalization dict (linked by ``demgen fit``).
        elevation_norm: accepted (``demgen fit`` links it into every task) and ignored.
        chip_size, pixel_size, vertical_crs: what the model was trained on (the default
            window is twice the chip; prediction checks the resolution; the datum is unused).
        image_dtype: accepted (linked from the store); the output is float32 probability.
        generator_kwargs: :class:`~demgen.models.unet.UNet` arguments
            (:data:`DEFAULT_GENERATOR_KWARGS` when empty).
        dice_weight: weight of the soft Dice term beside the BCE.
        lr, weight_decay, lr_patience: AdamW, halved on a ``val_loss`` plateau.
        channels_last: networks and inputs in NHWC during fit.
    """

    task_name = "segment"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any] | None = None,
        *,
        chip_size: int = 64,
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        image_dtype: str = "uint16",
        generator_kwargs: dict[str, Any] | None = None,
        dice_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_patience: int = 3,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if not generator_kwargs:
            generator_kwargs = dict(DEFAULT_GENERATOR_KWARGS)
        self.save_hyperparameters()
        self.hparams["generator_kwargs"] = generator_kwargs  # the resolved default
        self.image_norm = norm_from_dict(image_norm)
        self.image_fill = image_fill_value(self.image_norm)
        self.model = build_model(
            "unet", in_channels=self.in_channels, out_channels=1, **generator_kwargs
        )
        self.val_metrics = MaskMetrics()

    @property
    def bands(self) -> list[str]:
        return list(self.image_norm.bands)

    @property
    def in_channels(self) -> int:
        return len(self.image_norm.bands)

    @property
    def monitor(self) -> str:
        return "val_loss"

    @property
    def spec(self) -> TaskSpec:
        """``image`` (reflectance) in; ``buildings`` (probability, float32) out; dihedral."""
        bands = tuple(self.bands)
        inputs = (LayerSpec(IMAGE, len(bands), bands, "reflectance"),)
        out = LayerSpec(BUILDINGS, 1, (BUILDINGS,), "probability")
        chip = int(self.hparams.chip_size)
        return TaskSpec(inputs, (out,), self.size_multiple, 2 * chip, dihedral=True)

    def fill_values(self, name: str) -> tuple[float, ...]:
        if name != IMAGE:
            raise KeyError(f"no input layer {name!r} (inputs: {self.spec.input_names})")
        return stored_fill(self.image_norm, self.image_fill)

    def encode(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The image normalized, its invalid pixels the normalized fill."""
        x = self.image_norm.apply(inputs[IMAGE].float()).float()
        return fill_invalid(x, valid[IMAGE], self.image_fill)

    def decode(
        self, y: torch.Tensor, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Logits -> probability."""
        return {BUILDINGS: torch.sigmoid(y.float())}

    def predict_batch(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return self.decode(self(self.encode(inputs, valid)), inputs, valid)

    def export_description(self) -> dict[str, Any]:
        return {
            "inputs": [
                {"name": b, "layer": IMAGE, "normalization": "image_norm"} for b in self.bands
            ],
            "normalizations": {"image_norm": self.image_norm.to_dict(), "elevation_norm": None},
            "output": "building logits (B, 1, H, W); probability = sigmoid",
        }

    # ---------------------------------------------------------------- training
    def batch_roles(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(normalized image, 0/1 label, valid mask) of a time-pair or frame batch."""
        mask = batch["mask"].bool()
        image = batch["target"] if "target" in batch else batch["image"]
        x = fill_invalid(image.float(), mask, self.image_fill)
        return x, (batch["mask_t"].float() > 0.5).float(), mask

    def loss(self, logits: torch.Tensor, label: torch.Tensor, mask: torch.Tensor):
        return masked_bce(logits, label, mask) + self.hparams.dice_weight * soft_dice_loss(
            logits, label, mask
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, label, mask = self.batch_roles(batch)
        loss = self.loss(self(x), label, mask)
        self.log("train_loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, label, mask = self.batch_roles(batch)
        logits = self(x)
        self.val_metrics.update(torch.sigmoid(logits.float()), label, mask,
                                self.loss(logits, label, mask))  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        for name, value in self.val_metrics.compute().items():
            self.log(f"val_{name}", value, prog_bar=name in ("loss", "f1"), sync_dist=False)
        self.val_metrics.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)  # fmt: skip
        return plateau_optimizer_config(opt, self.hparams.lr_patience, self.monitor)


__all__ = ["BUILDINGS", "IMAGE", "MaskMetrics", "SegmentTask", "masked_bce", "soft_dice_loss"]
