"""What every demgen task shares: metres, validation metrics, the inference interface.

- :func:`to_metres` turns normalized heights of a batch back into metres, using the
  batch's per-chip ``offset`` when the elevation normalization is per chip.
- :class:`MetresMetrics` accumulates MAE, RMSE, bias, R2 and SSIM in metres over valid
  pixels (a torchmetrics ``Metric``, so it syncs under DDP).
- :func:`plateau_optimizer_config` is the optimizer/scheduler dict with ReduceLROnPlateau
  on ``val_mae_m``.
- :class:`DEMTask` is the base LightningModule: it owns the normalizations, the
  generator (``self.model``) and the inference interface that ``demgen predict`` and
  ``demgen export`` use (``forward``, ``bands``, ``size_multiple``, ``image_norm``,
  ``elevation_norm``, ``hparams.chip_size/target/channels_last``), validates every epoch
  and records its task name in the checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn
from torchmetrics import Metric

from demgen.data.normalize import norm_from_dict
from demgen.losses import masked_ssim
from demgen.models import build_model

#: ReduceLROnPlateau factor: halve the learning rate when validation MAE stalls.
PLATEAU_FACTOR = 0.5
#: Checkpoint key that names the task class that wrote it (see :func:`checkpoint_task`).
TASK_KEY = "demgen_task"


def to_metres(norm: Any, z: torch.Tensor, batch: dict[str, Any] | None = None) -> torch.Tensor:
    """Normalized heights ``z`` (B, 1, H, W) -> metres (float32).

    ``norm`` is an elevation normalization (see :mod:`demgen.data.normalize`); for a
    per-chip strategy (``norm.per_chip``) each chip's ``batch["offset"]`` (B,) metres is
    added back, so a batch without offsets raises there.
    """
    offset = None
    if batch is not None and batch.get("offset") is not None:
        offset = torch.as_tensor(batch["offset"], device=z.device).view(-1, 1, 1, 1).float()
    return norm.inverse(z.float(), offset)


class MetresMetrics(Metric):
    """MAE, RMSE, bias, R2 and SSIM of heights in metres over valid pixels.

    With ``e = pred - true`` over the ``n`` valid pixels of all updates::

        MAE = mean |e|      RMSE = sqrt(mean e^2)      bias = mean e
        R2 = 1 - sum e^2 / sum (true - mean true)^2
        SSIM = mean over valid pixels of the masked SSIM map (see demgen.losses.masked_ssim)

    Sums are kept in float64 so that R2's total sum of squares of heights of thousands
    of metres does not cancel. :meth:`compute` returns a dict with keys ``mae_m``,
    ``rmse_m``, ``bias_m``, ``r2`` and ``ssim`` (NaN before any valid pixel).
    """

    full_state_update = False
    higher_is_better = None
    NAMES = ("mae_m", "rmse_m", "bias_m", "r2", "ssim")

    def __init__(self, ssim: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.with_ssim = ssim
        for name in ("n", "sum_e", "sum_abs_e", "sum_e2", "sum_t", "sum_t2", "sum_ssim"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> None:
        """Add a batch: ``pred``, ``true`` (B, 1, H, W) metres, ``mask`` (B, 1, H, W) bool."""
        mask = mask.bool()
        if not mask.any():
            return
        p = pred.detach().double()[mask]
        t = true.detach().double()[mask]
        e = p - t
        self.n += e.numel()
        self.sum_e += e.sum()
        self.sum_abs_e += e.abs().sum()
        self.sum_e2 += (e * e).sum()
        self.sum_t += t.sum()
        self.sum_t2 += (t * t).sum()
        if self.with_ssim:
            smap = masked_ssim(pred.detach().float(), true.detach().float(), mask, reduction="none")
            self.sum_ssim += smap[mask].double().sum()

    def compute(self) -> dict[str, torch.Tensor]:
        if self.n == 0:
            nan = torch.tensor(float("nan"), device=self.n.device)
            return dict.fromkeys(self.NAMES, nan)
        n = self.n
        tss = self.sum_t2 - self.sum_t**2 / n
        out = {
            "mae_m": self.sum_abs_e / n,
            "rmse_m": torch.sqrt(self.sum_e2 / n),
            "bias_m": self.sum_e / n,
            "r2": 1.0 - self.sum_e2 / tss if tss > 0 else torch.full_like(n, float("nan")),
            "ssim": self.sum_ssim / n if self.with_ssim else torch.full_like(n, float("nan")),
        }
        return {k: v.float() for k, v in out.items()}


def plateau_scheduler(
    optimizer: torch.optim.Optimizer, patience: int = 2
) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau on a quantity to minimize (validation MAE in metres)."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=PLATEAU_FACTOR, patience=patience
    )


def plateau_optimizer_config(optimizer: torch.optim.Optimizer, patience: int = 2) -> dict:
    """Lightning's ``configure_optimizers`` dict: ``optimizer`` with ReduceLROnPlateau
    stepped every epoch on the logged ``val_mae_m``."""
    return {
        "optimizer": optimizer,
        "lr_scheduler": {
            "scheduler": plateau_scheduler(optimizer, patience),
            "monitor": "val_mae_m",
            "interval": "epoch",
        },
    }


def build_generator(
    name: str, in_channels: int, kwargs: dict[str, Any] | None = None, out_channels: int = 1
) -> nn.Module:
    """The generator registered as ``name`` in :mod:`demgen.models`, image bands -> heights."""
    return build_model(name, in_channels=in_channels, out_channels=out_channels, **(kwargs or {}))


def size_multiple_of(model: nn.Module) -> int:
    """Input side multiple a model needs: its ``size_multiple``, else ``2**depth``, else 1."""
    m = getattr(model, "size_multiple", None)
    if m is not None:
        return int(m)
    depth = getattr(model, "depth", None)
    return 2 ** int(depth) if depth is not None else 1


def checkpoint_task(checkpoint: dict[str, Any]) -> str:
    """The task name a loaded checkpoint dict was written by (``regression`` for
    checkpoints older than the task key)."""
    if checkpoint.get(TASK_KEY):
        return str(checkpoint[TASK_KEY])
    hp = checkpoint.get("hyper_parameters") or {}
    return str(hp.get("task", "regression"))


class DEMTask(L.LightningModule):
    """Base class of the demgen tasks: an image -> heights generator plus its normalizations.

    Subclasses call ``save_hyperparameters()`` (so the constructor arguments, including
    ``image_norm``, ``elevation_norm``, ``chip_size``, ``target`` and ``channels_last``,
    are in every checkpoint), then :meth:`_setup` with the generator, and implement
    ``training_step`` and ``configure_optimizers``. Validation (metrics in metres) and the
    inference interface are shared.
    """

    #: Name of the task, saved in checkpoints and used to pick the class when loading.
    task_name: ClassVar[str] = ""

    def _setup(self, image_norm: dict[str, Any], elevation_norm: dict[str, Any]) -> None:
        self.hparams["task"] = self.task_name
        self.image_norm = norm_from_dict(image_norm)
        self.elevation_norm = norm_from_dict(elevation_norm)
        self.val_metrics = MetresMetrics()

    @property
    def bands(self) -> list[str]:
        return self.image_norm.bands

    @property
    def in_channels(self) -> int:
        return len(self.image_norm.bands)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return size_multiple_of(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized image (B, bands, H, W) -> normalized heights (B, 1, H, W)."""
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def predict_metres(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized image -> heights in metres (float32); ``offset`` for per-chip norms."""
        return to_metres(self.elevation_norm, self(x), {"offset": offset})

    #: whether the networks and their inputs are channels_last (see set_channels_last)
    _channels_last: bool = False

    def set_channels_last(self, enabled: bool = True) -> None:
        """Put every network (generator, discriminators) and, in forward, every input in
        channels_last memory format (NHWC: oneDNN's and cuDNN's fast convolutions), or back."""
        self._channels_last = enabled
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def on_fit_start(self) -> None:
        self.set_channels_last(bool(self.hparams.get("channels_last", True)))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = to_metres(self.elevation_norm, self(batch["image"]), batch)
        true = to_metres(self.elevation_norm, batch["target"], batch)
        self.val_metrics.update(pred, true, batch["mask"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        for name, value in values.items():
            self.log(f"val_{name}", value, prog_bar=name == "mae_m", sync_dist=False)
        self.val_metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TASK_KEY] = self.task_name


__all__ = [
    "TASK_KEY",
    "DEMTask",
    "MetresMetrics",
    "build_generator",
    "checkpoint_task",
    "plateau_optimizer_config",
    "plateau_scheduler",
    "size_multiple_of",
    "to_metres",
]
