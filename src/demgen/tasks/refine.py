"""Residual DSM refinement (DeepDEM / ResDepth): initial DSM + images -> a better DSM or DTM.

The network sees the initial DSM relative to its own chip mean and scaled by the global scale
factor GSF, stacked with the orthoimages and optional layers, and predicts a correction::

    pred_m = initial_m + GSF * network(inputs)

(Stucker & Schindler 2022, "ResDepth", ISPRS J. 183, doi:10.1016/j.isprsjprs.2021.11.009;
Stucker et al. 2022/2023 DeepDEM, which adds NDVI, triangulation error and nodata inputs and a
DTM target). The loss is the masked L1 in metres; validation reports MAE, RMSE, bias, R2 and
SSIM in metres and the initial DSM's MAE on the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import MeanMetric

from demgen.data.fill import fill_invalid
from demgen.tasks.common import (
    DEMTask,
    build_generator,
    plateau_optimizer_config,
    stored_fill,
    to_metres,
)
from demgen.tasks.refine_inputs import (
    ANCHOR,
    DEFAULT_INPUTS,
    FIT_CHIPS,
    NODATA_MASK,
    NORM_FORMULAS,
    ORTHO1,
    _layer_channels,
    extra_layer_spec,
    fill_gaps,
    fit_input_norms,
)
from demgen.tasks.spec import LayerSpec, TaskSpec

__all__ = [
    "ANCHOR",
    "DEFAULT_INPUTS",
    "FIT_CHIPS",
    "NODATA_MASK",
    "ORTHO1",
    "RefineTask",
    "fill_gaps",
    "fit_input_norms",
]


class RefineTask(DEMTask):
    """Refine an initial DSM with a residual network: ``pred = initial + GSF * net(inputs)``.

    **Inputs by name.** ``inputs`` lists the stacked input layers, in channel order:

    - ``initial_dsm`` (required, the anchor): the store's extra layer of that name, in metres,
      normalized as ``(h - m) / GSF`` with ``m`` the mean of its valid pixels in the chip (the
      anchor's own chip mean: available at inference, never the target's), its holes filled
      from the surrounding values (:func:`fill_gaps`) before the correction is added;
    - ``ortho1``: the store's image bands (``batch["image"]``, normalized by the store);
    - ``nodata_mask``: 1 where the initial DSM has no value, else 0;
    - any other name: the store's extra layer(s) of that name (``ortho2``, stored band by band
      as ``ortho2_B2`` ...; ``triangulation_error``; ``ndvi``), normalized as ``input_norms``
      says (see :func:`fit_input_norms`), 0 where invalid.

    A batch is a :class:`~demgen.data.chips.ChipDataset` batch with ``extra=True``: ``image``,
    ``extra`` (E, H, W) in stored units, ``extra_valid``, ``target``, ``mask`` and ``offset``.
    ``extras`` (the store's ``ChipStore.extras``: name, layer, kind of every extra channel),
    ``inputs`` and ``input_norms`` are constructor arguments, so every checkpoint records the
    layer names and their normalizations and a predictor can stack inputs by name
    (:meth:`stack_inputs`). Build one from a datamodule with :meth:`from_datamodule`.

    **GSF** is the elevation normalization's metres per unit (``gsf`` of the store's
    ``residual`` normalization, prepared with ``--normalize residual``). The target's chip
    offset is only used to turn the training label back into metres.

    Args:
        target: ``dsm`` or ``dtm``: what the store's elevation holds (recorded for prediction).
        generator, generator_kwargs: network from :mod:`demgen.models` (``resdepth``), built
            with ``in_channels`` = stacked channels and ``out_channels=1``.
        swap_orthos: training augmentation: swap ``ortho1`` and ``ortho2`` channels per chip
            with probability 0.5 (when both are inputs with the same channel count).
        lr, weight_decay, lr_patience: AdamW, halved on a ``val_mae_m`` plateau.
        chip_size, pixel_size: what the model was trained on.
        vertical_crs: the vertical datum of the training heights (``unknown`` where not
            declared), written as the ``vertical_crs`` tag of every predicted raster.
    """

    task_name = "refine"
    anchored = True  # heights = initial DSM + correction: absolute despite the per-chip norm

    def __init__(
        self,
        image_norm: dict[str, Any],
        elevation_norm: dict[str, Any],
        *,
        extras: list[dict[str, Any]],
        input_norms: dict[str, dict[str, Any]],
        inputs: list[str] | None = None,
        target: str = "dsm",
        generator: str = "resdepth",
        generator_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        chip_size: int = 128,
        pixel_size: float | None = None,
        vertical_crs: str = "unknown",
        swap_orthos: bool = True,
        channels_last: bool = True,
        lr_patience: int = 2,
    ) -> None:
        super().__init__()
        inputs = list(DEFAULT_INPUTS if inputs is None else inputs)
        if target not in ("dsm", "dtm"):
            raise ValueError(f"target must be dsm or dtm, got {target!r}")
        if ANCHOR not in inputs:
            raise ValueError(f"inputs must include the anchor {ANCHOR!r}, got {inputs}")
        self.save_hyperparameters()
        self.hparams["inputs"] = inputs
        self._setup(image_norm, elevation_norm)
        self.extras = [dict(e) for e in extras]
        self.plan: list[tuple[str, str, list[int]]] = []  # (input, strategy, extra channels)
        for name in inputs:
            norm = input_norms.get(name)
            if norm is None:
                raise ValueError(f"no normalization for input {name!r} (see fit_input_norms)")
            ch = [] if name in (ORTHO1, NODATA_MASK) else _layer_channels(self.extras, name)
            if name not in (ORTHO1, NODATA_MASK) and not ch:
                raise ValueError(f"input {name!r} is not among the extra layers {self.extras}")
            self.plan.append((name, norm["strategy"], ch))
        self.anchor_channel = _layer_channels(self.extras, ANCHOR)[0]
        self.model = build_generator(generator, self.in_channels, generator_kwargs)
        self.val_initial_mae = MeanMetric()
        self.val_same_px_mae = MeanMetric()

    @classmethod
    def from_datamodule(cls, dm: Any, inputs: Sequence[str] | None = None, **kwargs: Any):
        """A task for a :class:`~demgen.data.datamodule.ChipDataModule` (``extra=True``),
        with the store's normalizations and extra layers and input norms fitted on its
        training split."""
        names = list(DEFAULT_INPUTS if inputs is None else inputs)
        norms = dm.normalization
        return cls(
            norms["image"],
            norms["elevation"],
            extras=dm.store.extras,
            input_norms=fit_input_norms(dm.store, names, dm.fold),
            inputs=names,
            **kwargs,
        )

    # ------------------------------------------------------------------ inputs
    @property
    def gsf(self) -> float:
        """Metres per normalized unit of the residual (the global scale factor)."""
        return float(self.elevation_norm.metres_per_unit)

    @property
    def channel_names(self) -> list[str]:
        """Name of every stacked input channel, in order."""
        out = []
        for name, _, ch in self.plan:
            if name == ORTHO1:
                out += [f"{ORTHO1}_{b}" for b in self.bands]
            elif name == NODATA_MASK:
                out.append(name)
            else:
                out += [self.extras[c]["name"] for c in ch]
        return out

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    def stack_inputs(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, anchor_m, anchor_valid)``: stacked normalized inputs (B, C, H, W), the
        initial DSM in metres with its holes filled (B, 1, H, W) and where it has a value
        (B, 1, H, W) bool."""
        ext = batch["extra"].float()
        mask = batch["mask"].bool()
        valid = batch.get("extra_valid")
        valid = (mask & torch.isfinite(ext)) if valid is None else valid.bool() & mask
        a = self.anchor_channel
        anchor, av = ext[:, a : a + 1], valid[:, a : a + 1]
        cnt = av.sum(dim=(2, 3), keepdim=True).clamp(min=1)
        offset = torch.where(av, anchor, 0.0).sum(dim=(2, 3), keepdim=True) / cnt
        gsf = self.gsf
        anchor_m = torch.where(av, anchor, offset)
        if not bool(av.all()):
            anchor_m = torch.where(av.any(dim=(2, 3), keepdim=True), fill_gaps(anchor, av), offset)
        parts = []
        for name, strategy, ch in self.plan:
            if name == ORTHO1:  # the image fill where invalid, as for the image tasks
                parts.append(fill_invalid(batch["image"].float(), mask, self.image_fill))
                continue
            if name == NODATA_MASK:
                parts.append((~av).float())
                continue
            v, ok = ext[:, ch], valid[:, ch]
            if strategy == "residual":
                v, ok = anchor_m, torch.ones_like(ok)
            if strategy in ("residual", "relative"):
                z = (v - offset) / gsf
            elif strategy == "image":
                z = self.image_norm.apply(v)
            elif strategy == "zscore":
                norm = self.hparams.input_norms[name]
                shape = (1, len(ch), 1, 1)
                mean = torch.tensor(norm["mean"], device=v.device).view(shape)
                std = torch.tensor(norm["std"], device=v.device).view(shape)
                z = (v - mean) / std
            else:
                raise ValueError(f"unknown input normalization {strategy!r} for {name!r}")
            parts.append(torch.where(ok, z, 0.0).float())
        return torch.cat(parts, dim=1), anchor_m, av

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked normalized inputs -> the residual in GSF units (B, 1, H, W)."""
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def refine_metres(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Refined heights in metres (B, 1, H, W): initial DSM + GSF x network output."""
        x, anchor_m, _ = self.stack_inputs(batch)
        return anchor_m + self.gsf * self(x).float()

    def predict_metres(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        raise TypeError("RefineTask needs its named inputs: use predict_batch(inputs, valid)")

    # ------------------------------------------------------------------ the task contract
    @property
    def default_window(self) -> int:
        """The training chip size: the residual's scale is defined per chip."""
        return int(self.hparams.chip_size)

    @property
    def spec(self) -> TaskSpec:
        """Inputs: ``ortho1`` (the image, first: the grid layer) and each extra input layer in
        ``inputs`` order (``nodata_mask`` is derived, not read); output: the target in metres,
        absolute (the correction is added to the initial DSM)."""
        layers = []
        for name, strategy, ch in self.plan:
            if name == ORTHO1:
                layers.append(LayerSpec(ORTHO1, len(self.bands), tuple(self.bands), "reflectance"))
            elif name != NODATA_MASK:
                layers.append(extra_layer_spec(name, strategy, self.extras, ch))
        layers.sort(key=lambda la: la.name != ORTHO1)
        target = str(self.hparams.target)
        return TaskSpec(
            inputs=tuple(layers),
            outputs=(LayerSpec(target, 1, (target,), "metre"),),
            window_multiple=self.size_multiple,
            window=self.default_window,
        )

    def fill_values(self, name: str) -> tuple[float, ...]:
        """``ortho1``: the image fill in stored units; extra layers: 0 (the task zeroes their
        invalid pixels after normalizing and fills the initial DSM's holes itself)."""
        layer = self.spec.input(name)
        if name == ORTHO1:
            return stored_fill(self.image_norm, self.image_fill)
        return (0.0,) * layer.channels

    def _batch(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Named inputs -> the store-batch form :meth:`stack_inputs` reads: ``image``
        (normalized), ``extra`` (E channels, stored order) with ``extra_valid``, and ``mask``:
        valid where every input without ``gaps`` is."""
        spec = self.spec
        ref = inputs[spec.inputs[0].name]
        b, _, h, w = ref.shape
        mask = torch.ones((b, 1, h, w), dtype=torch.bool, device=ref.device)
        for la in spec.inputs:
            if not la.gaps:
                mask = mask & valid[la.name].bool()
        ext = torch.zeros((b, len(self.extras), h, w), device=ref.device)
        ok = torch.zeros_like(ext, dtype=torch.bool)
        for name, _, ch in self.plan:
            for k, c in enumerate(ch):
                ext[:, c] = inputs[name][:, k].float()
                ok[:, c] = valid[name][:, 0].bool()
        batch = {"extra": torch.where(ok, ext, 0.0), "extra_valid": ok, "mask": mask}
        if ORTHO1 in inputs:
            batch["image"] = self.image_norm.apply(inputs[ORTHO1].float()).float()
        return batch

    def encode(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The stacked normalized network input (B, C, H, W), channels as :attr:`channel_names`."""
        return self.stack_inputs(self._batch(inputs, valid))[0]

    def decode(
        self, y: torch.Tensor, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Refined heights in metres: initial DSM (holes filled) + GSF x network output."""
        _, anchor_m, _ = self.stack_inputs(self._batch(inputs, valid))
        return {str(self.hparams.target): anchor_m + self.gsf * y.float()}

    def predict_batch(
        self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """:meth:`encode`, the network and :meth:`decode` with the inputs stacked once."""
        x, anchor_m, _ = self.stack_inputs(self._batch(inputs, valid))
        return {str(self.hparams.target): anchor_m + self.gsf * self(x).float()}

    def export_description(self) -> dict[str, Any]:
        """Every stacked channel in order with its layer and normalization (one entry per input
        layer, with its formula), and how the output becomes metres."""
        desc = super().export_description()
        inputs, norms = [], desc["normalizations"]
        for name, strategy, ch in self.plan:
            norm = dict(self.hparams.input_norms[name])
            norm["formula"] = NORM_FORMULAS.get(strategy, strategy)
            if strategy in ("residual", "relative"):
                norm["gsf"] = self.gsf
            if strategy == "image":
                norm["image_norm"] = "image_norm"
            norms[name] = norm
            if name == ORTHO1:
                names = [f"{ORTHO1}_{b}" for b in self.bands]
            elif name == NODATA_MASK:
                names = [NODATA_MASK]
            else:
                names = [self.extras[c]["name"] for c in ch]
            for i, n in enumerate(names):
                entry = {"name": n, "layer": name, "normalization": name}
                if len(names) > 1:
                    entry["channel"] = i
                inputs.append(entry)
        desc["inputs"] = inputs
        desc["output"] = (
            "correction in GSF units (B, 1, H, W): metres = initial DSM (holes filled) "
            "+ gsf * output"
        )
        desc["extra"] = {"gsf": self.gsf}
        return desc

    # ------------------------------------------------------------------ training
    def _swap_orthos(self, x: torch.Tensor) -> torch.Tensor:
        """Swap the ortho1 and ortho2 channel blocks of a random half of the chips."""
        spans, start = {}, 0
        names = self.channel_names
        for name, _, ch in self.plan:
            n = len(self.bands) if name == ORTHO1 else (1 if name == NODATA_MASK else len(ch))
            spans[name] = (start, start + n)
            start += n
        if ORTHO1 not in spans or "ortho2" not in spans:
            return x
        (a0, a1), (b0, b1) = spans[ORTHO1], spans["ortho2"]
        if a1 - a0 != b1 - b0 or len(names) != x.shape[1]:
            return x
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        if not flip.any():
            return x
        y = x.clone()
        y[flip, a0:a1], y[flip, b0:b1] = x[flip, b0:b1], x[flip, a0:a1]
        return y

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        batch = self.clean_batch(batch)
        x, anchor_m, _ = self.stack_inputs(batch)
        if self.hparams.swap_orthos:
            x = self._swap_orthos(x)
        pred = anchor_m + self.gsf * self(x).float()
        true = to_metres(self.elevation_norm, batch["target"], batch)
        m = batch["mask"].bool()
        loss = (pred - true).abs()[m].mean() if m.any() else pred.sum() * 0.0
        self.log("train_loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        batch = self.clean_batch(batch)
        x, anchor_m, av = self.stack_inputs(batch)
        pred = anchor_m + self.gsf * self(x).float()
        true = to_metres(self.elevation_norm, batch["target"], batch)
        m = batch["mask"].bool()
        self.val_metrics.update(pred, true, m)
        same = m & av
        if same.any():
            self.val_initial_mae.update((anchor_m - true).abs()[same])
            self.val_same_px_mae.update((pred - true).abs()[same])

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.val_initial_mae.update_count:
            init = self.val_initial_mae.compute()
            same = self.val_same_px_mae.compute()
            self.log("val_initial_mae_m", init)
            self.log("val_mae_same_px_m", same)
            self.log("val_improvement", 1.0 - same / init.clamp(min=1e-9))
        self.val_initial_mae.reset()
        self.val_same_px_mae.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        return plateau_optimizer_config(opt, self.hparams.lr_patience, self.monitor)
