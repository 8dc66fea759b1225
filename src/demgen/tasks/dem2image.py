"""DEM -> image: draw the image of a terrain from its heights (ImageToDEM "the other way round").

The chip store is the one image -> DEM trains on, with the roles of its layers swapped
(``ChipDataModule(inputs=["elevation"], targets=["image"])``). The network never sees raw
heights: :func:`demgen.tasks.relief.relief_features` turns the DEM in metres, with the true
pixel size, into height belts, local relief, the surface normal, slope, the hillshade under
the training images' sun and the sky view; optionally the land cover (one-hot) joins them.
It predicts the image bands in the store's image normalization, decoded back to the stored
units (uint16 reflectance x 10000 for Sentinel-2 L2A and demgen's synthetic images), which
is how ``demgen predict`` writes them (``LayerSpec.dtype``).

Two tasks, the two generators of the earlier work:

- :class:`Dem2ImageTask` (``dem2image``): a U-Net regressor, masked L1 in reflectance
  (``|pred - true| * reflectance_scale`` over valid pixels and bands), AdamW, the learning
  rate halved on a ``val_l1_refl`` plateau.
- :class:`~demgen.tasks.dem2image_gan.Dem2ImagePix2PixTask` (``dem2image_pix2pix``):
  pix2pix (Isola et al. 2017): U-Net G + PatchGAN D on ``concat(relief features, image)``,
  generator loss ``adv + lambda_l1 L1_refl`` with ``lambda_l1 = 100``, Adam ``2e-4,
  (0.5, 0.999)``, as in the original recipe. G's output is linear (no tanh):
  percentile-normalized snow lies far above 1, where a tanh would clip it.

**No augmentation.** Rotating or flipping a DEM chip together with its image turns the
shading of the image against the fixed sun of the relief features, so the recipes train
with ``augment: false``.

Validation logs ``val_l1_refl`` (the monitored metric), ``val_rmse_refl`` and
``val_psnr_db`` (PSNR over valid pixels at data range 1 in reflectance).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from demgen.data.normalize import default_reflectance_scale, norm_from_dict
from demgen.models import build_model
from demgen.models.unet import UNet
from demgen.tasks.base import ContractTask
from demgen.tasks.common import plateau_optimizer_config
from demgen.tasks.relief import FEATURES, relief_features
from demgen.tasks.spec import LayerSpec, TaskSpec

#: Input layer names of the DEM -> image tasks.
DEM, LANDCOVER = "dem", "landcover"


def height_center_scale(norm: Any) -> tuple[float, float]:
    """Centre and scale (metres) of the training heights, from the store's elevation
    normalization: the midpoint and half range for ``global``, mean and std for ``zscore``;
    per-chip strategies keep no absolute statistic, so 0 and their metres per unit."""
    d = norm.to_dict()
    if d.get("strategy", "global") == "global":
        return (float(d["vmin"]) + float(d["vmax"])) / 2.0, float(norm.half_range)
    if d.get("strategy") == "zscore":
        return float(d["mean"]), float(d["std"])
    return 0.0, float(norm.metres_per_unit)


class ReflectanceMetrics(Metric):
    """L1, RMSE and PSNR (data range 1) of reflectance over valid pixels and bands, summed in
    float64 over all updates (a torchmetrics ``Metric``: syncs under DDP)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("n", "sum_abs", "sum_sq"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> None:
        """``pred``, ``true`` (B, C, H, W) reflectance; ``mask`` (B, 1, H, W) bool."""
        m = mask.bool().expand_as(pred)
        e = (pred.detach().double() - true.detach().double())[m]
        self.n += e.numel()
        self.sum_abs += e.abs().sum()
        self.sum_sq += (e * e).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n.clamp(min=1)
        mse = self.sum_sq / n
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
        psnr = 10.0 * torch.log10(1.0 / mse) if mse > 0 else torch.full_like(mse, math.inf)
        out = {"l1_refl": self.sum_abs / n, "rmse_refl": mse.sqrt(), "psnr_db": psnr}
        if self.n == 0:
            out = dict.fromkeys(out, nan)
        return {k: v.float() for k, v in out.items()}


class Dem2ImageTask(ContractTask):
    """U-Net regressor DEM (metres) -> image bands (stored reflectance units), masked L1.

    Args:
        image_norm, elevation_norm: the chip store's normalization dicts (linked by
            ``demgen fit``): the image's decodes the output, the elevation's gives the
            height statistics of the ``height`` feature (:func:`height_center_scale`).
        landcover_classes: 0 (default): the DEM alone; ``k > 0``: a ``landcover`` input
            layer of class codes ``0..k-1`` (the store layer of that name), one-hot.
        generator, generator_kwargs: network from :mod:`demgen.models`; with ``unet`` and
            no kwargs, ``base``, ``depth``, ``stem`` and ``max_width`` shape it.
        lr, weight_decay, lr_patience: AdamW, halved on a ``val_l1_refl`` plateau.
        chip_size, pixel_size, vertical_crs: what the model was trained on (the default
            window; the resolution check of prediction, also the pixel size of the relief
            features: metres; the datum of the input heights).
        image_dtype: how the training images were stored (``uint16``, ``uint8`` or
            ``float32``, linked from the store): predictions are written the same way.
        reflectance_scale: stored value -> reflectance factor; default from ``image_dtype``
            (``1e-4`` for uint16, ``1/255`` for uint8, 1 for float).
        sun_azimuth, sun_elevation: the sun of the hillshade feature (degrees).
        relief_radius: half side (px) of the local-relief box.
    """

    task_name = "dem2image"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any],
        *,
        landcover_classes: int = 0,
        generator: str = "unet",
        generator_kwargs: dict[str, Any] | None = None,
        base: int = 32,
        depth: int = 4,
        stem: int = 1,
        max_width: int = 256,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
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
        super().__init__()
        if landcover_classes < 0:
            raise ValueError(f"landcover_classes must be >= 0, got {landcover_classes}")
        self.save_hyperparameters()
        if reflectance_scale is None:
            self.hparams["reflectance_scale"] = default_reflectance_scale(image_dtype)
        self.image_norm = norm_from_dict(image_norm)
        self.elevation_norm = norm_from_dict(elevation_norm)
        self.height_center, self.height_scale = height_center_scale(self.elevation_norm)
        self._build_generator()
        self.val_metrics = ReflectanceMetrics()

    def _build_generator(self) -> None:
        hp = self.hparams
        if hp.generator == "unet" and not hp.generator_kwargs:
            self.model = UNet(self.in_channels, self.n_bands, base=hp.base, depth=hp.depth,
                              stem=hp.stem, max_width=hp.max_width)  # fmt: skip
        else:
            kwargs = dict(hp.generator_kwargs or {})
            if hp.generator == "pix2pix":
                kwargs.setdefault("final", None)  # linear output (module docstring)
            self.model = build_model(
                hp.generator, in_channels=self.in_channels, out_channels=self.n_bands, **kwargs
            )

    # ---------------------------------------------------------------- shapes and names
    @property
    def bands(self) -> list[str]:
        return list(self.image_norm.bands)

    @property
    def n_bands(self) -> int:
        return len(self.image_norm.bands)

    @property
    def in_channels(self) -> int:
        """Channels of the network input: the relief features, then the land-cover one-hot."""
        return len(FEATURES) + int(self.hparams.landcover_classes)

    @property
    def monitor(self) -> str:
        return "val_l1_refl"

    @property
    def spec(self) -> TaskSpec:
        """``dem`` (metres) [+ ``landcover`` (class)] in; ``image`` (reflectance, the
        stored dtype) out; not dihedral (the sun has a direction: no flip TTA)."""
        inputs = [LayerSpec(DEM, 1, (DEM,), "metre")]
        if self.hparams.landcover_classes:
            inputs.append(LayerSpec(LANDCOVER, 1, (LANDCOVER,), "class"))
        bands = tuple(self.bands)
        out = LayerSpec("image", len(bands), bands, "reflectance", dtype=self.hparams.image_dtype)
        chip = int(self.hparams.chip_size)
        return TaskSpec(tuple(inputs), (out,), self.size_multiple, 2 * chip, dihedral=False)

    def fill_values(self, name: str) -> tuple[float, ...]:
        """Invalid DEM pixels take the training heights' centre, invalid land cover class 0
        (their features are zeroed in :meth:`encode` anyway)."""
        if name == DEM:
            return (self.height_center,)
        if name == LANDCOVER and self.hparams.landcover_classes:
            return (0.0,)
        raise KeyError(f"no input layer {name!r} (inputs: {self.spec.input_names})")

    # ---------------------------------------------------------------- the contract
    def features(
        self, heights_m: torch.Tensor, valid: torch.Tensor, landcover: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The network input (B, in_channels, H, W): relief features of ``heights_m``
        (metres) and the land-cover one-hot, 0 wherever ``valid`` (B, 1, H, W) is False."""
        hp = self.hparams
        h = torch.where(valid, heights_m.float(), torch.full_like(heights_m.float(),
                                                                  self.height_center))  # fmt: skip
        x = relief_features(
            h, hp.pixel_size or 1.0, height_mean=self.height_center,
            height_std=self.height_scale, sun_azimuth=hp.sun_azimuth,
            sun_elevation=hp.sun_elevation, radius=hp.relief_radius,
        )  # fmt: skip
        if hp.landcover_classes:
            if landcover is None:
                raise ValueError("the task was trained with land cover: give a landcover layer")
            k = int(hp.landcover_classes)
            codes = landcover.round().long().clamp(0, k - 1)[:, 0]
            x = torch.cat([x, F.one_hot(codes, k).permute(0, 3, 1, 2).float()], dim=1)
        return torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))

    def encode(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        ok = valid[DEM].bool()
        lc = inputs.get(LANDCOVER)
        if lc is not None:
            ok = ok & valid[LANDCOVER].bool()
        return self.features(inputs[DEM], ok, lc)

    def decode(
        self, y: torch.Tensor, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Normalized bands -> stored units, never below 0."""
        return {"image": self.image_norm.inverse(y.float()).float().clamp(min=0.0)}

    def predict_batch(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Named inputs (B, 1, H, W) in their units and their validity -> ``image``."""
        return self.decode(self(self.encode(inputs, valid)), inputs, valid)

    def export_description(self) -> dict[str, Any]:
        hp = self.hparams
        lc = [f"landcover_{k}" for k in range(int(hp.landcover_classes))]
        return {
            "inputs": [{"name": f, "layer": DEM, "normalization": "relief"} for f in FEATURES]
            + [{"name": n, "layer": LANDCOVER, "normalization": "one_hot"} for n in lc],
            "normalizations": {
                "relief": {
                    "formula": "demgen.tasks.relief.relief_features",
                    "height_mean": self.height_center,
                    "height_std": self.height_scale,
                    "pixel_size_m": hp.pixel_size,
                    "sun_azimuth": hp.sun_azimuth,
                    "sun_elevation": hp.sun_elevation,
                    "radius": hp.relief_radius,
                },
                "image_norm": self.image_norm.to_dict(),
                "elevation_norm": self.elevation_norm.to_dict(),
            },  # fmt: skip
            "output": "normalized bands (B, C, H, W); stored units = image_norm inverse",
        }

    # ---------------------------------------------------------------- training
    def batch_roles(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
        """(network input, target normalized image, mask, target reflectance) of a chip
        batch served with ``inputs=["elevation"(, "landcover")], targets=["image"]`` (or
        with the default roles, swapped here)."""
        mask = batch["mask"].bool()
        if "input" in batch:
            z, target = batch["input"][:, :1], batch["target"]
            lc = batch["input"][:, 1:2] if self.hparams.landcover_classes else None
        else:
            z, target, lc = batch["target"], batch["image"], None
        offset = batch.get("offset")
        if offset is not None:
            offset = offset.to(z.device).view(-1, 1, 1, 1).float()
        metres = self.elevation_norm.inverse(z.float(), offset)
        x = self.features(metres, mask, lc)
        return x, target.float(), mask, self.reflectance(target)

    def reflectance(self, z: torch.Tensor) -> torch.Tensor:
        """Normalized bands -> reflectance (stored units x ``reflectance_scale``)."""
        return self.image_norm.inverse(z.float()) * float(self.hparams.reflectance_scale)

    def l1_refl(self, y: torch.Tensor, true_refl: torch.Tensor, mask: torch.Tensor):
        """Masked L1 in reflectance, averaged over valid pixels and bands."""
        err = (self.reflectance(y) - true_refl).abs() * mask
        return err.sum() / (mask.sum() * y.shape[1]).clamp(min=1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, _, mask, true = self.batch_roles(batch)
        loss = self.l1_refl(self(x), true, mask)
        self.log("train_loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, _, mask, true = self.batch_roles(batch)
        self.val_metrics.update(self.reflectance(self(x)), true, mask)

    def on_validation_epoch_end(self) -> None:
        for name, value in self.val_metrics.compute().items():
            self.log(f"val_{name}", value, prog_bar=name == "l1_refl", sync_dist=False)
        self.val_metrics.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)  # fmt: skip
        return plateau_optimizer_config(opt, self.hparams.lr_patience, self.monitor)


__all__ = [
    "DEM",
    "LANDCOVER",
    "Dem2ImageTask",
    "ReflectanceMetrics",
    "height_center_scale",
]
