"""Conditional diffusion in pixel space: what the three diffusion tasks share.

A diffusion task draws its output layer (heights, an image) as a *sample*: a denoising U-Net
(:class:`~demgen.models.denoiser.ConditionalDenoiser`: the noisy target with the condition
layers concatenated, the step as a sinusoidal embedding, GroupNorm) is trained with DDPM's
objective (Ho et al. 2020) on a cosine schedule (Nichol & Dhariwal 2021) and predicts ``v``
(Salimans & Ho 2022), and sampling runs DDIM (Song et al. 2021) on a few of the 1000 steps
(:mod:`demgen.schedulers`, one algorithm per module; why not diffusers: README). Samples
come from an exponential moving average of the weights (:mod:`demgen.models.ema`).

**Condition and target.** The host task (image -> DEM, DEM -> image, temporal) keeps its
contract: the same input layers, encoded as its deterministic sibling encodes them
(``condition``), and the same output layer, decoded by the host's ``decode``. The diffusion
target ``x0`` is the host's normalized output, affinely mapped to about [-1, 1] (``(y -
base - shift) / scale``; ``base`` the day-0 bands of temporal synthesis, which thus learns
the change, as its GAN sibling does), 0 on invalid pixels, which the loss ignores.

**Classifier-free guidance** (Ho & Salimans 2022): the condition is dropped with probability
``p_uncond`` during training (the denoiser then sees zeros and a learned "no condition"
embedding); sampling combines ``out_uncond + w (out_cond - out_uncond)`` with ``w =
guidance_scale`` (1: plain conditional sampling, one pass; above 1: sharper, less diverse).

**Loss.** Masked MSE between the network output and the ``v`` target over valid pixels.

**Validation** logs ``val_loss`` (the same loss at steps spread evenly over the schedule,
with noise seeded by the batch index, so epochs compare), and with ``val_steps > 0`` it also
samples each validation chip with ``val_steps`` DDIM steps from the EMA weights and logs the
host's metrics of that sample (``val_mae_m`` in metres for heights, ``val_l1_refl`` for
images), which is then the monitored metric; else ``val_loss`` is.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from demgen.models.denoiser import ConditionalDenoiser
from demgen.models.ema import ema_model
from demgen.schedulers import DDIMScheduler, DDPMScheduler, cfg_drop_mask, guided_output
from demgen.tasks.attributes import attribute_vector, check_attributes, image_attributes
from demgen.tasks.spec import TaskSpec


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion settings of a task (its ``diffusion`` argument, a dict in configs).

    Network: ``base_channels``, ``channel_mults`` (one per level), ``num_res_blocks``,
    ``attention`` (self-attention at the lowest level), ``groups`` (GroupNorm), ``dropout``.
    Schedule: ``num_train_timesteps``, ``beta_schedule`` (``cosine`` or ``linear``),
    ``prediction_type`` (``v_prediction``, ``epsilon``, ``sample``). Training: ``p_uncond``
    (condition dropout for guidance), ``ema_decay`` (0: no EMA), ``ema_warmup``, ``lr``,
    ``weight_decay`` (AdamW at a constant rate after ``warmup_steps`` linear steps).
    Sampling defaults: ``sample_steps`` (DDIM), ``guidance_scale``, ``eta`` (0:
    deterministic DDIM). ``val_steps``: DDIM steps of the validation samples (0: none).
    ``attributes``: per-chip attributes of the target image the denoiser is also conditioned
    on (:mod:`demgen.tasks.attributes`: ``snow``, ``vegetation``, ``water``), each vector
    dropped with ``p_uncond`` on its own.
    """

    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True
    groups: int = 8
    dropout: float = 0.0
    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"
    prediction_type: str = "v_prediction"
    p_uncond: float = 0.1
    ema_decay: float = 0.999
    ema_warmup: float = 10.0
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    sample_steps: int = 25
    guidance_scale: float = 1.0
    eta: float = 0.0
    val_steps: int = 10
    attributes: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> DiffusionConfig:
        """The config of a ``diffusion`` dict; ValueError naming an unknown key."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown diffusion settings {unknown}; known: {sorted(known)}")
        if "channel_mults" in values:
            values["channel_mults"] = tuple(int(m) for m in values["channel_mults"])
        if "attributes" in values:
            values["attributes"] = tuple(str(a) for a in values["attributes"] or ())
        cfg = cls(**values)
        if not 0.0 <= cfg.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {cfg.p_uncond}")
        if cfg.sample_steps < 1 or cfg.val_steps < 0:
            raise ValueError("sample_steps must be >= 1 and val_steps >= 0")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, numbers): what the checkpoint's hyperparameters keep."""
        d = dataclasses.asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attributes"] = list(self.attributes)
        return d


class DiffusionMixin:
    """Diffusion training and sampling on top of a host task's contract.

    The class using it (``class X(DiffusionMixin, HostTask)``) provides:

    - ``condition(inputs, valid) -> Tensor``: the condition layers (B, C, H, W) of named
      inputs in their units (default: the host's ``encode``, with ``cond_channels`` its
      ``in_channels`` and ``sample_metrics`` its ``val_metrics``);
    - ``diffusion_batch(batch) -> (cond, target, mask)``: a training batch as condition,
      host-normalized target (B, T, H, W) and validity (B, 1, H, W);
    - ``target_channels`` and ``cond_channels``;
    - ``update_sample_metrics(y, target, mask)``: the host's validation metrics of a sampled
      output ``y`` (host-normalized), and ``sample_metrics`` (the metric object);
    - optionally ``target_base(cond)`` (what the target is drawn relative to) and the
      class attributes ``target_shift`` and ``target_scale``.

    ``predict_batch`` samples each window on its own (default noise); whole scenes are
    sampled jointly by :func:`demgen.inference.sampling.sample_scene`.
    """

    target_shift: float = 0.0
    target_scale: float = 1.0
    #: the metric the host logs as ``val_<name>`` from its sample metrics, monitored when
    #: validation samples (``val_steps > 0``)
    sample_monitor: str = "val_loss"

    # ---------------------------------------------------------------- set-up
    def _build_diffusion(self, diffusion: dict[str, Any] | None) -> None:
        """The denoiser, its EMA copy and the training schedule, from the task's
        ``diffusion`` dict (resolved values go back into the hyperparameters)."""
        cfg = DiffusionConfig.from_dict(diffusion)
        check_attributes(cfg.attributes, self.attribute_bands)
        self.hparams["diffusion"] = cfg.to_dict()
        self.diffusion_config = cfg
        self.model = ConditionalDenoiser(
            target_channels=self.target_channels, cond_channels=self.cond_channels,
            base_channels=cfg.base_channels, channel_mults=cfg.channel_mults,
            num_res_blocks=cfg.num_res_blocks, attention=cfg.attention, groups=cfg.groups,
            dropout=cfg.dropout, attr_dim=len(cfg.attributes),
        )  # fmt: skip
        self.ema = ema_model(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay else None
        self.noise_schedule = DDPMScheduler(
            cfg.num_train_timesteps, cfg.beta_schedule, prediction_type=cfg.prediction_type
        )

    def _own_hparams(self) -> None:
        """Keep only the hyperparameters this class takes (and ``task``): a host's
        constructor saves its generator's and GAN's arguments too, which a diffusion task
        neither uses nor accepts back."""
        keep = set(inspect.signature(type(self).__init__).parameters) | {"task"}
        for key in [k for k in self.hparams if k not in keep]:
            del self.hparams[key]

    @property
    def denoiser(self) -> ConditionalDenoiser:
        """The network samples come from: the EMA weights when kept, else the live ones."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def monitor(self) -> str:
        return self.sample_monitor if self.diffusion_config.val_steps > 0 else "val_loss"

    @property
    def spec(self) -> TaskSpec:
        """The host's layers; outputs are samples drawn by iterative denoising."""
        return dataclasses.replace(super().spec, stochastic=True, diffusion=True,
                                   window_multiple=1)  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:  # the ContractTask generator call has no meaning
        raise TypeError(
            "a diffusion task has no single forward pass: use predict_batch (one sample per "
            "window) or demgen.inference.sampling.sample_scene"
        )

    # ---------------------------------------------------------------- target space
    def target_base(self, cond: Tensor) -> Tensor | None:
        return None

    # the hosts' own names for these, unless a task says otherwise
    @property
    def cond_channels(self) -> int:
        return self.in_channels

    @property
    def sample_metrics(self):
        return self.val_metrics

    def condition(self, inputs: dict[str, Tensor], valid: dict[str, Tensor]) -> Tensor:
        return self.encode(inputs, valid)

    #: band names the attributes are computed from (image targets: their bands; none else)
    @property
    def attribute_bands(self) -> tuple[str, ...]:
        return ()

    def batch_attributes(self, target: Tensor, mask: Tensor) -> Tensor | None:
        """(B, A) attributes of a host-normalized target (:mod:`demgen.tasks.attributes`,
        from its reflectance), None when the config has none."""
        names = self.diffusion_config.attributes
        if not names:
            return None
        return image_attributes(self.reflectance(target), self.attribute_bands, mask, names)

    def attribute_tensor(self, given: dict[str, float] | None, batch: int,
                         device: torch.device | str) -> Tensor | None:  # fmt: skip
        """The attributes of a sampling call as a (batch, A) tensor, None for none (the
        learned "no attributes" embedding); ValueError for unknown, missing or out-of-range
        values (:func:`~demgen.tasks.attributes.attribute_vector`)."""
        vec = attribute_vector(given, self.diffusion_config.attributes)
        if vec is None:
            return None
        return torch.tensor(vec, dtype=torch.float32, device=device).expand(batch, -1)

    def to_x0(self, target: Tensor, cond: Tensor, mask: Tensor) -> Tensor:
        """Host-normalized target -> diffusion space (about [-1, 1]), 0 where invalid."""
        base = self.target_base(cond)
        y = target.float() if base is None else target.float() - base
        x0 = (y - self.target_shift) / self.target_scale
        return torch.where(mask, x0, torch.zeros((), dtype=x0.dtype, device=x0.device))

    def from_x0(self, x0: Tensor, cond: Tensor) -> Tensor:
        """Diffusion space -> host-normalized output (the inverse of :meth:`to_x0`)."""
        y = x0.float() * self.target_scale + self.target_shift
        base = self.target_base(cond)
        return y if base is None else y + base

    # ---------------------------------------------------------------- sampling
    def sampler(self, steps: int | None = None, eta: float | None = None) -> DDIMScheduler:
        """A DDIM sampler on the training schedule, its ``steps`` set (default: the config's)."""
        cfg = self.diffusion_config
        s = DDIMScheduler.from_scheduler(self.noise_schedule, cfg.eta if eta is None else eta)
        s.set_timesteps(int(steps or cfg.sample_steps))
        return s

    def denoise(self, x: Tensor, t: Tensor | int, cond: Tensor, guidance: float | None = None,
                attrs: Tensor | None = None) -> Tensor:  # fmt: skip
        """The (guided) EMA denoiser output at ``x_t`` (B, T, H, W), float32. Guidance
        contrasts the condition with nothing; with ``attrs`` (B, A) it contrasts condition +
        attributes with the condition alone, so it pushes towards the attributes."""
        scale = self.diffusion_config.guidance_scale if guidance is None else float(guidance)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            cond = cond.contiguous(memory_format=torch.channels_last)
        keep = attrs is not None
        return guided_output(self.denoiser, x, t, cond, attrs, scale, keep_cond=keep).float()

    @torch.no_grad()
    def sample_network(self, cond: Tensor, noise: Tensor, steps: int | None = None,
                       guidance: float | None = None, eta: float | None = None,
                       generator: torch.Generator | None = None,
                       attrs: Tensor | None = None) -> Tensor:  # fmt: skip
        """One sample per condition: DDIM from ``noise`` (B, T, H, W) -> host-normalized
        output (B, T, H, W)."""
        sched = self.sampler(steps, eta)
        x = noise.float()
        for t in sched.timesteps:
            out = self.denoise(x, int(t), cond, guidance, attrs)
            x = sched.step(out, int(t), x, generator=generator).prev_sample
        return self.from_x0(x, cond)

    def predict_batch(
        self, inputs: dict[str, Tensor], valid: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """One sample per window (noise from torch's generator), decoded to the output
        layer's units. Whole scenes: :func:`demgen.inference.sampling.sample_scene`."""
        cond = self.condition(inputs, valid)
        b, _, h, w = cond.shape
        noise = torch.randn(b, self.target_channels, h, w, device=cond.device)
        return self.decode(self.sample_network(cond, noise), inputs, valid)

    def export_description(self) -> dict[str, Any]:
        raise TypeError("diffusion checkpoints sample iteratively and are not exported")

    # ---------------------------------------------------------------- training
    def diffusion_loss(self, cond: Tensor, target: Tensor, mask: Tensor,
                       t: Tensor | None = None, noise: Tensor | None = None,
                       drop: Tensor | None = None, attrs: Tensor | None = None,
                       drop_attrs: Tensor | None = None) -> Tensor:  # fmt: skip
        """Masked MSE of the denoiser output against the training target (v) at random (or
        given) steps ``t``, with the condition dropped where ``drop`` and the attributes
        ``attrs`` (B, A) where ``drop_attrs``."""
        x0 = self.to_x0(target, cond, mask)
        b = x0.shape[0]
        if t is None:
            t = self.noise_schedule.sample_timesteps(b, device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        if drop is None:
            drop = torch.zeros(b, dtype=torch.bool, device=x0.device)
        xt = self.noise_schedule.add_noise(x0, noise, t)
        if self._channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
            cond = cond.contiguous(memory_format=torch.channels_last)
        out = self.model(xt, t, cond=cond, attrs=attrs, drop_cond=drop, drop_attrs=drop_attrs)
        goal = self.noise_schedule.training_target(x0, noise, t)
        m = mask.float().expand_as(goal)
        return ((out.float() - goal) ** 2 * m).sum() / m.sum().clamp(min=1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        cond, target, mask = self.diffusion_batch(batch)
        b = cond.shape[0]
        p = self.diffusion_config.p_uncond
        drop = cfg_drop_mask(b, p, device=cond.device)
        attrs = self.batch_attributes(target, mask)
        drop_attrs = None if attrs is None else cfg_drop_mask(b, p, device=cond.device)
        loss = self.diffusion_loss(cond, target, mask, drop=drop, attrs=attrs,
                                   drop_attrs=drop_attrs)  # fmt: skip
        self.log("train_loss", loss, prog_bar=True, batch_size=b)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        cond, target, mask = self.diffusion_batch(batch)
        b, dev = cond.shape[0], cond.device
        gen = torch.Generator(device=dev).manual_seed(1000 + batch_idx)
        T = self.noise_schedule.num_train_timesteps
        t = ((torch.arange(b, device=dev) + 0.5) * T / b).long().clamp(max=T - 1)
        noise = torch.randn(target.shape[0], self.target_channels, *target.shape[-2:],
                            generator=gen, device=dev)  # fmt: skip
        attrs = self.batch_attributes(target, mask)
        loss = self.diffusion_loss(cond, target, mask, t=t, noise=noise, attrs=attrs)
        self.log("val_loss", loss, batch_size=b, prog_bar=self.monitor == "val_loss")
        steps = self.diffusion_config.val_steps
        if steps:
            start = torch.randn(noise.shape, generator=gen, device=dev)
            y = self.sample_network(cond, start, steps=steps)
            self.update_sample_metrics(y, target, mask)

    def on_validation_epoch_end(self) -> None:
        if not self.diffusion_config.val_steps:
            return
        for name, value in self.sample_metrics.compute().items():
            key = f"val_{name}"
            self.log(key, value, prog_bar=key == self.monitor, sync_dist=False)
        self.sample_metrics.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW on the live denoiser (not its EMA copy), the rate warmed up linearly over
        ``warmup_steps`` then constant (diffusion training is long; the EMA anneals)."""
        cfg = self.diffusion_config
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, int(cfg.warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


__all__ = ["DiffusionConfig", "DiffusionMixin"]
