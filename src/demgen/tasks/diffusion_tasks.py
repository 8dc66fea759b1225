"""The three diffusion tasks: image -> DEM, DEM -> image, (day-0 image, mask at t) -> image at t.

Each is its deterministic sibling's contract (the same named inputs and output layer, the
same encoding of the inputs, the same decoding to metres or stored reflectance) with the
generator replaced by a conditional denoiser (:class:`~demgen.tasks.diffusion.DiffusionMixin`):

- :class:`Image2DemDiffusionTask` (``image2dem_diffusion``): the image bands condition a
  sample of the heights; many samples give a per-pixel spread, an uncertainty in metres.
  Needs an absolute elevation normalization (``global`` or ``zscore``): a per-chip offset is
  unknown where a scene is sampled.
- :class:`Dem2ImageDiffusionTask` (``dem2image_diffusion``): the relief features of the DEM
  in metres (:mod:`demgen.tasks.relief`) condition a sample of the image; not dihedral (the
  sun has a direction), so recipes train without flips.
- :class:`TemporalDiffusionTask` (``temporal_diffusion``): the day-0 image, the building mask
  at t (and the time gap) condition a sample of the change since day 0, added back to the
  day-0 bands.

Images in percentile normalization (about 0..1) are mapped to about -1..1 for the diffusion
(``target_shift = target_scale = 0.5``); heights in the ``global`` normalization are already
-1..1. Validation samples (``val_steps``) are scored by the host's metric: ``val_mae_m``
(heights) or ``val_l1_refl`` (images).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from demgen.tasks.common import DEMTask, to_metres
from demgen.tasks.dem2image import Dem2ImageTask
from demgen.tasks.diffusion import DiffusionMixin
from demgen.tasks.temporal import TemporalTask


def _image_shift_scale(image_norm: Any) -> tuple[float, float]:
    """(shift, scale) mapping a normalized image to about [-1, 1]: percentile-normalized
    bands lie in about [0, 1]; z-scored bands are left as they are."""
    if image_norm.to_dict().get("strategy") == "percentile":
        return 0.5, 0.5
    return 0.0, 1.0


class Image2DemDiffusionTask(DiffusionMixin, DEMTask):
    """Image (stored units) -> a sample of the heights (metres).

    Args:
        image_norm, elevation_norm: the chip store's normalization dicts (linked by
            ``demgen fit``); the elevation one must be absolute (``global``, ``zscore``).
        diffusion: :class:`~demgen.tasks.diffusion.DiffusionConfig` settings.
        chip_size, target, pixel_size, vertical_crs: what the model was trained on.
        channels_last: networks and inputs in NHWC during fit.
    """

    task_name = "image2dem_diffusion"
    sample_monitor = "val_mae_m"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any],
        *,
        diffusion: dict[str, Any] | None = None,
        chip_size: int = 64,
        target: str = "dtm",
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._setup(image_norm, elevation_norm)
        if self.relative:
            raise ValueError(
                "image2dem_diffusion needs an absolute elevation normalization (global or "
                "zscore): a per-chip offset is unknown where a scene is sampled"
            )
        self._build_diffusion(diffusion)

    @property
    def target_channels(self) -> int:
        return 1

    def diffusion_batch(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        b = self.clean_batch(batch)
        return b["image"].float(), b["target"].float(), b["mask"]

    def update_sample_metrics(self, y: Tensor, target: Tensor, mask: Tensor) -> None:
        norm = self.elevation_norm
        self.val_metrics.update(to_metres(norm, y), to_metres(norm, target), mask)


class ImageDiffusionMixin(DiffusionMixin):
    """What the two image-drawing diffusion tasks share: the target is the host's bands,
    attributes come from them, validation samples are scored in reflectance (clamped at 0,
    as prediction writes them)."""

    @property
    def attribute_bands(self) -> tuple[str, ...]:
        return tuple(self.bands)

    @property
    def target_channels(self) -> int:
        return self.n_bands

    def update_sample_metrics(self, y: Tensor, target: Tensor, mask: Tensor) -> None:
        pred = self.reflectance(y).clamp(min=0.0)
        self.val_metrics.update(pred, self.reflectance(target), mask)


class Dem2ImageDiffusionTask(ImageDiffusionMixin, Dem2ImageTask):
    """DEM (metres) [+ land cover] -> a sample of the image (stored reflectance units).

    Args: as :class:`~demgen.tasks.dem2image.Dem2ImageTask` without the generator's, plus
    ``diffusion`` (:class:`~demgen.tasks.diffusion.DiffusionConfig` settings).
    """

    task_name = "dem2image_diffusion"
    sample_monitor = "val_l1_refl"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any],
        *,
        diffusion: dict[str, Any] | None = None,
        landcover_classes: int = 0,
        chip_size: int = 64,
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        image_dtype: str = "uint16",
        reflectance_scale: float | None = None,
        sun_azimuth: float = 150.0,
        sun_elevation: float = 40.0,
        relief_radius: int = 8,
        channels_last: bool = True,
    ) -> None:
        # the parent saves the hyperparameters (this frame's too) and calls _build_generator
        super().__init__(
            image_norm, elevation_norm, landcover_classes=landcover_classes,
            chip_size=chip_size, pixel_size=pixel_size, vertical_crs=vertical_crs,
            image_dtype=image_dtype, reflectance_scale=reflectance_scale,
            sun_azimuth=sun_azimuth, sun_elevation=sun_elevation,
            relief_radius=relief_radius, channels_last=channels_last,
        )  # fmt: skip
        self._own_hparams()

    def _build_generator(self) -> None:
        self.target_shift, self.target_scale = _image_shift_scale(self.image_norm)
        self._build_diffusion(self.hparams.get("diffusion"))

    def diffusion_batch(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        x, target, mask, _ = self.batch_roles(batch)
        return x, target, mask


class TemporalDiffusionTask(ImageDiffusionMixin, TemporalTask):
    """Day-0 image + building mask at t [+ gap] -> a sample of the image at t.

    Args: as :class:`~demgen.tasks.temporal.TemporalTask` without the GAN's, plus
    ``diffusion`` (:class:`~demgen.tasks.diffusion.DiffusionConfig` settings). The sample
    is of the change since day 0 (the target's ``base`` is the normalized day-0 bands).
    """

    task_name = "temporal_diffusion"
    sample_monitor = "val_l1_refl"

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any] | None = None,
        *,
        diffusion: dict[str, Any] | None = None,
        chip_size: int = 64,
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        image_dtype: str = "uint16",
        reflectance_scale: float | None = None,
        use_gap: bool = False,
        predict_gap_days: float | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__(
            image_norm, elevation_norm, chip_size=chip_size, pixel_size=pixel_size,
            vertical_crs=vertical_crs, image_dtype=image_dtype,
            reflectance_scale=reflectance_scale, use_gap=use_gap,
            predict_gap_days=predict_gap_days, channels_last=channels_last,
        )  # fmt: skip
        self._own_hparams()
        self.automatic_optimization = True

    def _build_generator(self) -> None:
        self.target_shift, self.target_scale = 0.0, 0.5  # changes: about -1..1 normalized
        self._build_diffusion(self.hparams.get("diffusion"))

    def target_base(self, cond: Tensor) -> Tensor:
        return cond[:, : self.n_bands].float()

    def diffusion_batch(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        if self.training:
            self._record_gaps(batch)
        r = self.batch_roles(batch)
        return r["x"], r["target"], r["mask"]


__all__ = ["Dem2ImageDiffusionTask", "Image2DemDiffusionTask", "TemporalDiffusionTask"]
