"""What every demgen task shares: metres, validation metrics, the inference interface.

- :func:`to_metres` turns normalized heights of a batch back into metres, using the
  batch's per-chip ``offset`` when the elevation normalization is per chip.
- :class:`MetresMetrics` accumulates MAE, RMSE, bias, R2 and SSIM in metres over valid
  pixels (a torchmetrics ``Metric``, so it syncs under DDP); ``relative=True`` gives the
  explicitly named relative metrics of per-chip (relative) models instead.
- :func:`plateau_optimizer_config` is the optimizer/scheduler dict with ReduceLROnPlateau
  on the task's monitored metric (:attr:`DEMTask.monitor`).

**Invalid pixels.** Every training and validation step first passes its batch through
:meth:`DEMTask.clean_batch`: image values where ``mask`` is False or not finite take the
image fill (:func:`demgen.data.fill.image_fill_value`, the same one prediction uses) and
the target is 0 there, so the networks never see NaN and neither losses nor metrics
depend on what invalid pixels held.

**Relative models.** A per-chip elevation normalization (``norm.per_chip``, e.g.
``global-shift``) predicts heights up to an unknown offset per chip; turning a prediction
into metres with the chip's *true* offset would report an accuracy no prediction can
reach. Their validation logs ``val_mae_rel_m``, ``val_rmse_rel_m``, ``val_r2_rel`` and
``val_ssim_rel``: the metrics after removing each chip's mean error (see
:class:`MetresMetrics`), and no ``val_mae_m``; :attr:`DEMTask.monitor` names the metric to
monitor (``val_mae_rel_m`` for them, ``val_mae_m`` otherwise).
- :class:`DEMTask` is the base LightningModule: it owns the normalizations, the
  generator (``self.model``) and the task contract that ``demgen predict`` and
  ``demgen export`` use (:mod:`demgen.tasks.spec`: ``spec``, ``fill_values``,
  ``predict_batch``, ``encode``/``decode``, ``export_description``; image in, heights in
  metres out), validates every epoch and records its task name in the checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from demgen.data.fill import fill_invalid, image_fill_value
from demgen.data.normalize import norm_from_dict
from demgen.losses import masked_ssim
from demgen.models import build_model
from demgen.tasks.base import TASK_KEY, ContractTask, checkpoint_task, size_multiple_of
from demgen.tasks.spec import LayerSpec, TaskSpec

#: ReduceLROnPlateau factor: halve the learning rate when validation MAE stalls.
PLATEAU_FACTOR = 0.5


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

    ``relative=True`` (models whose heights are only defined up to a per-chip offset):
    each chip's prediction is first shifted by its mean error over its valid pixels,
    ``pred' = pred - mean_chip(pred - true)``, and the truth's R2 baseline is its own chip
    mean, ``t' = true - mean_chip(true)``; keys are ``mae_rel_m``, ``rmse_rel_m``, ``r2_rel``
    and ``ssim_rel`` (the bias is 0 by construction and not reported). These measure
    relief, not absolute heights, and no per-chip offset enters them.
    """

    full_state_update = False
    higher_is_better = None
    NAMES = ("mae_m", "rmse_m", "bias_m", "r2", "ssim")
    REL_NAMES = {"mae_m": "mae_rel_m", "rmse_m": "rmse_rel_m", "r2": "r2_rel", "ssim": "ssim_rel"}

    def __init__(self, ssim: bool = True, relative: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.with_ssim = ssim
        self.relative = relative
        for name in ("n", "sum_e", "sum_abs_e", "sum_e2", "sum_t", "sum_t2", "sum_ssim"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> None:
        """Add a batch: ``pred``, ``true`` (B, 1, H, W) metres, ``mask`` (B, 1, H, W) bool."""
        mask = mask.bool()
        if not mask.any():
            return
        pred, true = pred.detach(), true.detach()
        zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
        pred, true = torch.where(mask, pred, zero), torch.where(mask, true, zero.to(true.dtype))
        if self.relative:
            n = mask.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
            mean_e = (pred.double() - true.double()).sum(dim=(1, 2, 3), keepdim=True) / n
            mean_t = true.double().sum(dim=(1, 2, 3), keepdim=True) / n
            pred = torch.where(mask, pred.double() - mean_e, 0.0)
            tss_t = torch.where(mask, true.double() - mean_t, 0.0)
        p = pred.double()[mask]
        t = true.double()[mask]
        e = p - t
        self.n += e.numel()
        self.sum_e += e.sum()
        self.sum_abs_e += e.abs().sum()
        self.sum_e2 += (e * e).sum()
        t_base = tss_t[mask] if self.relative else t
        self.sum_t += t_base.sum()
        self.sum_t2 += (t_base * t_base).sum()
        if self.with_ssim:
            smap = masked_ssim(pred.detach().float(), true.detach().float(), mask, reduction="none")
            self.sum_ssim += smap[mask].double().sum()

    def compute(self) -> dict[str, torch.Tensor]:
        out = self._compute()
        if self.relative:
            return {self.REL_NAMES[k]: v for k, v in out.items() if k in self.REL_NAMES}
        return out

    def _compute(self) -> dict[str, torch.Tensor]:
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


def plateau_optimizer_config(
    optimizer: torch.optim.Optimizer, patience: int = 2, monitor: str = "val_mae_m"
) -> dict:
    """Lightning's ``configure_optimizers`` dict: ``optimizer`` with ReduceLROnPlateau
    stepped every epoch on the logged ``monitor`` (a task's :attr:`DEMTask.monitor`)."""
    return {
        "optimizer": optimizer,
        "lr_scheduler": {
            "scheduler": plateau_scheduler(optimizer, patience),
            "monitor": monitor,
            "interval": "epoch",
        },
    }


def build_generator(
    name: str, in_channels: int, kwargs: dict[str, Any] | None = None, out_channels: int = 1
) -> nn.Module:
    """The generator registered as ``name`` in :mod:`demgen.models`, image bands -> heights."""
    return build_model(name, in_channels=in_channels, out_channels=out_channels, **(kwargs or {}))


def stored_fill(image_norm: Any, fill: float) -> tuple[float, ...]:
    """The image fill in stored units (DN or reflectance), per band: the values that
    ``image_norm`` maps to the normalized fill ``fill`` (0 for ``band-zscore``: each band's
    training mean; 0.5 for ``percentile``), so a caller filling invalid pixels with these
    gives the network exactly what training gave it."""
    z = np.full((len(image_norm.bands), 1, 1), fill, np.float32)
    return tuple(float(v) for v in np.asarray(image_norm.inverse(z), np.float64).ravel())


class DEMTask(ContractTask):
    """Base class of the demgen tasks: an image -> heights generator plus its normalizations.

    Subclasses call ``save_hyperparameters()`` (so the constructor arguments, including
    ``image_norm``, ``elevation_norm``, ``chip_size``, ``target``, ``pixel_size``,
    ``vertical_crs`` and ``channels_last``, are in every checkpoint), then :meth:`_setup`
    with the generator, and implement ``training_step`` and ``configure_optimizers``.
    Validation (metrics in metres) and the inference interface are shared.
    """

    #: True where predictions are absolute whatever the normalization (refinement adds a
    #: correction to an initial DSM), so a per-chip normalization does not make it relative.
    anchored: ClassVar[bool] = False

    def _setup(self, image_norm: dict[str, Any], elevation_norm: dict[str, Any]) -> None:
        self.hparams["task"] = self.task_name
        self.hparams.setdefault("vertical_crs", "unknown")
        self.image_norm = norm_from_dict(image_norm)
        self.elevation_norm = norm_from_dict(elevation_norm)
        self.image_fill = image_fill_value(self.image_norm)
        self.val_metrics = MetresMetrics(relative=self.relative)

    @property
    def relative(self) -> bool:
        """Whether predicted heights are only defined up to a per-chip offset."""
        return bool(getattr(self.elevation_norm, "per_chip", False)) and not self.anchored

    @property
    def monitor(self) -> str:
        """The validation metric to minimize (checkpoints, early stopping, LR plateau):
        ``val_mae_rel_m`` for relative models (they log no ``val_mae_m``), else
        ``val_mae_m``."""
        return "val_mae_rel_m" if self.relative else "val_mae_m"

    def clean_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with the image filled (:func:`~demgen.data.fill.image_fill_value`)
        wherever ``mask`` is False or the value is not finite, and the target 0 there: what
        invalid pixels hold can reach neither a network nor a loss. Cheap (two
        ``torch.where``); a :class:`~demgen.data.chips.ChipDataset` batch is already clean."""
        mask = batch["mask"].bool()
        out = {**batch, "mask": mask}
        out["image"] = fill_invalid(batch["image"], mask, self.image_fill)
        target = batch["target"]
        out["target"] = torch.where(mask, target, torch.zeros((), dtype=target.dtype,
                                                              device=target.device))  # fmt: skip
        return out

    @property
    def bands(self) -> list[str]:
        return self.image_norm.bands

    @property
    def in_channels(self) -> int:
        return len(self.image_norm.bands)

    # ------------------------------------------------------------ the task contract
    @property
    def default_window(self) -> int:
        """Prediction window side (px): the chip size for relative (per-chip) models, whose
        offset is defined over a chip, else twice it (fewer windows, more context)."""
        chip = int(self.hparams.chip_size)
        return chip if self.relative else 2 * chip

    @property
    def spec(self) -> TaskSpec:
        """Image (stored units) in, heights (metres, ``relative`` for per-chip models) out."""
        target = str(self.hparams.get("target") or "dtm")
        bands = tuple(self.bands)
        return TaskSpec(
            inputs=(LayerSpec("image", len(bands), bands, "reflectance"),),
            outputs=(LayerSpec(target, 1, (target,), "metre", relative=self.relative),),
            window_multiple=self.size_multiple,
            window=self.default_window,
        )

    def fill_values(self, name: str) -> tuple[float, ...]:
        """Per-channel value (in the layer's own units) that invalid pixels of input ``name``
        take before :meth:`predict_batch` (see :func:`stored_fill`)."""
        if name != "image":
            raise KeyError(f"no input layer {name!r} (inputs: {self.spec.input_names})")
        return stored_fill(self.image_norm, self.image_fill)

    def encode(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The network's input (B, C, H, W) from the named inputs in their units: the image
        normalized, its invalid pixels the normalized fill (exactly as in training)."""
        x = self.image_norm.apply(inputs["image"].float()).float()
        return fill_invalid(x, valid["image"], self.image_fill)

    def decode(
        self, y: torch.Tensor, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The network's output -> each output layer in its unit (metres; for relative
        models with offset 0, which the blender then anchors)."""
        offset = 0.0 if self.relative else None
        name = self.spec.outputs[0].name
        return {name: self.elevation_norm.inverse(y.float(), offset).float()}

    def predict_batch(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Named inputs (B, C, H, W) in their units, invalid pixels already filled with
        :meth:`fill_values`, and where each is valid (B, 1, H, W) bool -> named outputs
        (B, C, H, W) in their units. H and W are multiples of ``spec.window_multiple``."""
        return self.decode(self(self.encode(inputs, valid)), inputs, valid)

    def export_description(self) -> dict[str, Any]:
        """What an exported network needs beside its graph: ``inputs`` (one entry per
        channel of :meth:`encode`'s tensor: name, layer, normalization key),
        ``normalizations`` by key, and ``output`` (how to read the network's output)."""
        return {
            "inputs": [
                {"name": b, "layer": "image", "normalization": "image_norm"} for b in self.bands
            ],
            "normalizations": {
                "image_norm": self.image_norm.to_dict(),
                "elevation_norm": self.elevation_norm.to_dict(),
            },
            "output": "normalized heights (B, 1, H, W); metres = elevation_norm inverse",
        }

    def predict_metres(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized image -> heights in metres (float32); ``offset`` for per-chip norms."""
        return to_metres(self.elevation_norm, self(x), {"offset": offset})

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate metrics in metres. For relative models the chip offset only turns
        both sides into metres; :class:`MetresMetrics` (``relative=True``) removes each
        chip's mean error, so no true offset ever improves a reported number."""
        batch = self.clean_batch(batch)
        pred = to_metres(self.elevation_norm, self(batch["image"]), batch)
        true = to_metres(self.elevation_norm, batch["target"], batch)
        self.val_metrics.update(pred, true, batch["mask"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        shown = self.monitor.removeprefix("val_")
        for name, value in values.items():
            self.log(f"val_{name}", value, prog_bar=name == shown, sync_dist=False)
        self.val_metrics.reset()


__all__ = [
    "TASK_KEY",
    "DEMTask",
    "MetresMetrics",
    "build_generator",
    "checkpoint_task",
    "plateau_optimizer_config",
    "plateau_scheduler",
    "size_multiple_of",
    "stored_fill",
    "to_metres",
]
