"""Spatio-temporal synthesis: (day-0 image of a place, building mask at month t) -> image at t.

What the earlier SpaceNet 7 work did, on demgen's task contract and with the losses it meant:
the generator sees the day-0 image (the store's image normalization) and the building (or
change) mask of date t (0/1), optionally the time gap as one constant channel, and draws the
image of date t in the same normalization, decoded back to the stored units (uint16
reflectance x 10000 for Sentinel-2 L2A and demgen's synthetic series), never below 0.

:class:`TemporalTask` (``temporal``) is pix2pix (Isola et al. 2017, arXiv:1611.07004): a
generator G, a PatchGAN D on ``concat(network input, image)``, the D loss
``0.5 [adv(real) + adv(fake)]``, the G loss ``lambda_gan adv + lambda_l1 L1_refl`` with
``lambda_l1 = 100`` and L1 the masked mean absolute error in reflectance (stored units x
``reflectance_scale``), two Adams ``2e-4, (0.5, 0.999)`` stepped by hand, D then G. Two
generators:

- ``pix2pix``: the pix2pix U-Net (:class:`~demgen.models.pix2pix.Pix2PixUNet`), with a
  linear output (``final=None``): the target is in the image's own normalization, where
  bright roofs and snow lie above 1 and a tanh would clip them;
- ``attention_unet``: the attention U-Net (Oktay et al. 2018, arXiv:1804.03999,
  :class:`~demgen.models.attention_unet.AttentionUNet`): additive attention gates on the
  skips, linear 1x1 head.

``lambda_gan = 0`` is plain L1 regression: D is kept (checkpoints have one shape) but is
neither run nor stepped.

**Time gap.** With ``use_gap`` the network input has one more channel, ``gap_days / 365``
everywhere. Training reads ``gap_days`` from the batch; scene prediction has no second date,
so it uses ``predict_gap_days`` if set, else the median gap of the training batches
(recorded in the checkpoint, buffer ``train_gap_days``), else 365 days; a caller that knows
each pair's gap passes it to ``predict_batch`` as ``inputs["gap_days"]`` ((B,) days).

**Mask input.** ``mask_t`` is read as 0/1 (``> 0.5``); its invalid pixels (nodata, masked)
count as "no building" and do not make the output nodata (the layer has ``gaps``), so a
mask raster that declares 0 as nodata still predicts everywhere the image is valid.

Validation logs ``val_l1_refl`` (the monitored metric), ``val_rmse_refl``,
``val_psnr_db`` (data range 1 in reflectance), ``val_l1_changed_refl`` (the L1 over the
``changed`` pixels only: the new buildings, where copying day 0 is wrong) and
``val_l1_copy_refl`` / ``val_l1_copy_changed_refl`` (the same L1s of the day-0 image taken as
the prediction: the baseline a model must beat), on the prediction clamped at 0 as
``demgen predict`` writes it.

:class:`SegmentTask` (``segment``, :mod:`demgen.tasks.segment`) is the building segmenter
that scores synthesized images by the buildings found in them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from demgen.data.fill import fill_invalid, image_fill_value
from demgen.data.normalize import default_reflectance_scale, norm_from_dict
from demgen.losses import GAN_MODES
from demgen.models import build_model
from demgen.models.skip import InputSkip
from demgen.tasks.base import ContractTask
from demgen.tasks.common import stored_fill
from demgen.tasks.dem2image import ReflectanceMetrics
from demgen.tasks.gan import gan_optimizers, gan_step, step_plateaus
from demgen.tasks.spec import LayerSpec, TaskSpec

#: Input and output layer names.
IMAGE_T0, MASK_T, IMAGE = "image_t0", "mask_t", "image"
#: Band name of the mask layer (the time layout's ``buildings.tif``).
MASK_BAND = "buildings"
#: Generators the task offers (names in :data:`demgen.models.MODELS`).
GENERATORS = ("pix2pix", "attention_unet")
#: Generator arguments used when ``generator_kwargs`` is empty.
DEFAULT_GENERATOR_KWARGS: dict[str, dict[str, Any]] = {
    "pix2pix": {"depth": 6, "base": 64, "max_width": 512},
    "attention_unet": {"depth": 4, "base": 32, "max_width": 512},
}
#: Days per unit of the gap channel, and the prediction gap when nothing else is known.
DAYS_PER_YEAR = 365.0
DEFAULT_GAP_DAYS = 365.0
#: How many training gaps are kept to take their median.
MAX_GAPS = 100_000


class TemporalTask(ContractTask):
    """Day-0 image + building mask at t -> image at t; pix2pix-style G + PatchGAN D.

    Args:
        image_norm: the store's image normalization dict (linked by ``demgen fit``).
        elevation_norm: accepted (``demgen fit`` links it into every task) and ignored.
        chip_size, pixel_size, vertical_crs: what the model was trained on (the default
            window is twice the chip; prediction checks the resolution; the datum is unused).
        image_dtype: how the training images were stored (linked from the store): the
            output layer is written the same way (``uint16``: nodata 0).
        reflectance_scale: stored value -> reflectance factor of the L1; default from
            ``image_dtype`` (1e-4 for uint16, 1/255 for uint8, 1 for float).
        use_gap: add the channel ``gap_days / 365``.
        predict_gap_days: the gap used at prediction (``use_gap`` only); None: the training
            median, else 365.
        residual: the generator draws the change since day 0: its output is added to the
            normalized day-0 bands (:class:`~demgen.models.skip.InputSkip`), so an untrained
            model starts at persistence (the baseline every model must beat) and the L1 and
            adversarial terms act on what changed; outputs stay in the image's units.
        generator, generator_kwargs: ``pix2pix`` or ``attention_unet`` and its arguments
            (:data:`DEFAULT_GENERATOR_KWARGS` when empty); the pix2pix output is linear.
        discriminator_kwargs: PatchGAN arguments.
        gan_mode: ``bce`` or ``lsgan``.
        lambda_gan, lambda_l1: weights of the adversarial and L1 terms of the G loss.
        lr, betas: both Adams; the learning rates are halved on a ``val_l1_refl`` plateau
            of ``lr_patience`` epochs.
        channels_last: networks and inputs in NHWC during fit.
    """

    task_name = "temporal"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any] | None = None,
        *,
        chip_size: int = 64,
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        image_dtype: str = "uint16",
        reflectance_scale: float | None = None,
        use_gap: bool = False,
        predict_gap_days: float | None = None,
        residual: bool = True,
        generator: str = "pix2pix",
        generator_kwargs: dict[str, Any] | None = None,
        discriminator_kwargs: dict[str, Any] | None = None,
        gan_mode: str = "bce",
        lambda_gan: float = 1.0,
        lambda_l1: float = 100.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_patience: int = 3,
        channels_last: bool = True,
    ) -> None:
        # explicit arguments, no **kwargs: LightningCLI links only the arguments a task has
        super().__init__()
        if generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, got {generator!r}")
        if gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {gan_mode!r}")
        if lambda_gan < 0 or lambda_l1 < 0:
            raise ValueError("lambda_gan and lambda_l1 must be >= 0")
        if not generator_kwargs:
            generator_kwargs = dict(DEFAULT_GENERATOR_KWARGS[generator])
        if reflectance_scale is None:
            reflectance_scale = default_reflectance_scale(image_dtype)
        self.save_hyperparameters()
        # resolved defaults go into the checkpoint (LightningCLI hands save_hyperparameters
        # the config as given, not these locals)
        self.hparams["generator_kwargs"] = generator_kwargs
        self.hparams["reflectance_scale"] = reflectance_scale
        self.image_norm = norm_from_dict(image_norm)
        self.image_fill = image_fill_value(self.image_norm)
        self._build_generator()
        # the median training gap (days), saved with the weights; NaN until a fit records it
        self.register_buffer("train_gap_days", torch.tensor(float("nan")))
        self._gaps: list[torch.Tensor] = []
        self.val_metrics = ReflectanceMetrics()
        self.val_changed = ReflectanceMetrics()
        self.val_copy = ReflectanceMetrics()
        self.val_copy_changed = ReflectanceMetrics()

    def _build_generator(self) -> None:
        """G (residual: plus the day-0 bands) and the PatchGAN D, stepped by hand."""
        hp = self.hparams
        kwargs = dict(hp.generator_kwargs)
        if hp.generator == "pix2pix":
            kwargs.setdefault("final", None)  # linear output (module docstring)
        self.model = build_model(
            hp.generator, in_channels=self.in_channels, out_channels=self.n_bands, **kwargs
        )
        if hp.residual:  # the network draws the change since day 0 (models/skip.py)
            self.model = InputSkip(self.model, self.n_bands)
        self.discriminator = build_model(
            "patchgan", in_channels=self.in_channels + self.n_bands,
            **(hp.discriminator_kwargs or {}),
        )  # fmt: skip
        self.automatic_optimization = False

    # ---------------------------------------------------------------- shapes and names
    @property
    def bands(self) -> list[str]:
        return list(self.image_norm.bands)

    @property
    def n_bands(self) -> int:
        return len(self.image_norm.bands)

    @property
    def in_channels(self) -> int:
        """Network input channels: the day-0 bands, the mask, the gap if used."""
        return self.n_bands + 1 + int(bool(self.hparams.use_gap))

    @property
    def monitor(self) -> str:
        return "val_l1_refl"

    @property
    def prediction_gap_days(self) -> float:
        """The gap (days) prediction feeds a ``use_gap`` model: ``predict_gap_days``, else
        the training median, else :data:`DEFAULT_GAP_DAYS`."""
        if self.hparams.predict_gap_days is not None:
            return float(self.hparams.predict_gap_days)
        median = float(self.train_gap_days)
        return median if math.isfinite(median) else DEFAULT_GAP_DAYS

    @property
    def spec(self) -> TaskSpec:
        """``image_t0`` (reflectance, the store's bands) and ``mask_t`` (class 0/1, its holes
        the task's) in; ``image`` (reflectance, the stored dtype) out; dihedral."""
        bands = tuple(self.bands)
        inputs = (
            LayerSpec(IMAGE_T0, len(bands), bands, "reflectance"),
            LayerSpec(MASK_T, 1, (MASK_BAND,), "class", gaps=True),
        )
        out = LayerSpec(IMAGE, len(bands), bands, "reflectance", dtype=self.hparams.image_dtype)
        chip = int(self.hparams.chip_size)
        return TaskSpec(inputs, (out,), self.size_multiple, 2 * chip, dihedral=True)

    def fill_values(self, name: str) -> tuple[float, ...]:
        """Invalid day-0 pixels take the stored value of the normalized image fill (what
        training fills them with); invalid mask pixels 0 (no building)."""
        if name == IMAGE_T0:
            return stored_fill(self.image_norm, self.image_fill)
        if name == MASK_T:
            return (0.0,)
        raise KeyError(f"no input layer {name!r} (inputs: {self.spec.input_names})")

    # ---------------------------------------------------------------- the contract
    def network_input(
        self, image_t0: torch.Tensor, mask_t: torch.Tensor, gap_days: torch.Tensor | None
    ) -> torch.Tensor:
        """``concat(normalized day-0 image, mask_t 0/1[, gap_days / 365])`` (B, C, H, W)."""
        x = [image_t0.float(), (mask_t.float() > 0.5).float()]
        if self.hparams.use_gap:
            if gap_days is None:
                raise ValueError("the task uses the time gap: the batch needs 'gap_days'")
            b, _, h, w = image_t0.shape
            g = torch.as_tensor(gap_days, dtype=torch.float32, device=image_t0.device)
            x.append((g.reshape(-1, 1, 1, 1) / DAYS_PER_YEAR).expand(b, 1, h, w))
        return torch.cat(x, dim=1)

    def encode(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Named inputs in their units -> the network input: the day-0 image normalized, its
        invalid pixels the normalized fill; the mask 0/1, 0 where invalid; the gap
        ``inputs["gap_days"]`` ((B,) days, optional: not a layer, for callers that know each
        pair's gap, such as scoring on a time store), else :attr:`prediction_gap_days`."""
        img = self.image_norm.apply(inputs[IMAGE_T0].float()).float()
        img = fill_invalid(img, valid[IMAGE_T0], self.image_fill)
        mask = inputs[MASK_T].float()
        ok = valid.get(MASK_T)
        if ok is not None:
            mask = torch.where(ok.bool(), mask, torch.zeros((), device=mask.device))
        gap = inputs.get("gap_days")
        if gap is None:
            gap = torch.full((img.shape[0],), self.prediction_gap_days, device=img.device)
        return self.network_input(img, mask, gap)

    def decode(
        self, y: torch.Tensor, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Normalized bands -> stored units, never below 0."""
        return {IMAGE: self.image_norm.inverse(y.float()).float().clamp(min=0.0)}

    def predict_batch(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``image_t0`` (B, C, H, W) and ``mask_t`` (B, 1, H, W) in their units, invalid
        pixels filled, and their validity -> ``image`` (B, C, H, W) in stored units."""
        return self.decode(self(self.encode(inputs, valid)), inputs, valid)

    def export_description(self) -> dict[str, Any]:
        hp = self.hparams
        inputs = [{"name": b, "layer": IMAGE_T0, "normalization": "image_norm"} for b in self.bands]
        inputs.append({"name": MASK_BAND, "layer": MASK_T, "normalization": "binary"})
        norms: dict[str, Any] = {
            "image_norm": self.image_norm.to_dict(),
            "elevation_norm": None,
            "binary": {"formula": "1 where mask_t > 0.5 and valid, else 0"},
        }
        if hp.use_gap:
            inputs.append({"name": "gap", "layer": "gap_days", "normalization": "gap_years"})
            norms["gap_years"] = {
                "formula": f"gap_days / {DAYS_PER_YEAR:g}, constant over the window",
                "predict_gap_days": self.prediction_gap_days,
            }
        return {
            "inputs": inputs,
            "normalizations": norms,
            "output": "normalized bands (B, C, H, W) (with residual: the graph already adds the "
            "normalized day-0 bands); stored units = image_norm inverse, clamped at 0",
        }

    # ---------------------------------------------------------------- training
    def batch_roles(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A time-pair batch -> ``x`` (network input), ``target`` (normalized, the fill
        where invalid), ``image_t0`` (normalized), ``mask`` and ``changed`` (B, 1, H, W)."""
        mask = batch["mask"].bool()
        img0 = fill_invalid(batch["image_t0"].float(), torch.ones_like(mask), self.image_fill)
        target = fill_invalid(batch["target"].float(), mask, self.image_fill)
        changed = batch.get("changed")
        if changed is None and "mask_t0" in batch:
            changed = (batch["mask_t"] > 0.5) & ~(batch["mask_t0"] > 0.5)
        changed = mask if changed is None else changed.bool() & mask
        x = self.network_input(img0, batch["mask_t"], batch.get("gap_days"))
        return {"x": x, "target": target, "image_t0": img0, "mask": mask, "changed": changed}

    def reflectance(self, z: torch.Tensor) -> torch.Tensor:
        """Normalized bands -> reflectance (stored units x ``reflectance_scale``)."""
        return self.image_norm.inverse(z.float()) * float(self.hparams.reflectance_scale)

    def l1_refl(self, y: torch.Tensor, true_refl: torch.Tensor, mask: torch.Tensor):
        """Masked L1 in reflectance, averaged over valid pixels and bands."""
        err = (self.reflectance(y) - true_refl).abs() * mask
        return err.sum() / (mask.sum() * y.shape[1]).clamp(min=1)

    def _record_gaps(self, batch: dict[str, Any]) -> None:
        gap = batch.get("gap_days")
        if gap is not None and sum(g.numel() for g in self._gaps) < MAX_GAPS:
            self._gaps.append(torch.as_tensor(gap).detach().float().flatten().cpu())

    def on_train_epoch_end(self) -> None:
        if self._gaps:
            self.train_gap_days.fill_(float(torch.cat(self._gaps).double().quantile(0.5)))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._record_gaps(batch)
        r = self.batch_roles(batch)
        x, target, mask = r["x"], r["target"], r["mask"]
        true = self.reflectance(target)
        fake = torch.where(mask, self(x), target)  # invalid pixels: the real ones, no gradient
        gan_step(self, x, target, fake, lambda f: self.l1_refl(f, true, mask))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        r = self.batch_roles(batch)
        scale = float(self.hparams.reflectance_scale)
        pred = self.image_norm.inverse(self(r["x"]).float()).clamp(min=0.0) * scale
        true, copy = self.reflectance(r["target"]), self.reflectance(r["image_t0"])
        self.val_metrics.update(pred, true, r["mask"])
        self.val_changed.update(pred, true, r["changed"])
        self.val_copy.update(copy, true, r["mask"])
        self.val_copy_changed.update(copy, true, r["changed"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        for name, value in values.items():
            self.log(f"val_{name}", value, prog_bar=name == "l1_refl", sync_dist=False)
        for key, metric in (("val_l1_changed_refl", self.val_changed),
                            ("val_l1_copy_refl", self.val_copy),
                            ("val_l1_copy_changed_refl", self.val_copy_changed)):  # fmt: skip
            self.log(key, metric.compute()["l1_refl"], sync_dist=False)
        for metric in (self.val_metrics, self.val_changed, self.val_copy, self.val_copy_changed):
            metric.reset()
        step_plateaus(self, values["l1_refl"])

    def configure_optimizers(self):
        return gan_optimizers(self)


__all__ = [
    "DEFAULT_GAP_DAYS",
    "DEFAULT_GENERATOR_KWARGS",
    "GENERATORS",
    "IMAGE",
    "IMAGE_T0",
    "MASK_T",
    "TemporalTask",
]
