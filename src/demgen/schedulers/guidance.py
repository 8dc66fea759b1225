"""Classifier-free guidance and a plain sampling loop.

Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance",
eq. 6): one network is trained both with and without its conditions (each dropped with
probability ``p``, :func:`cfg_drop_mask`); at sampling its two outputs are combined as

    out = out_uncond + w * (out_cond - out_uncond)

``w = 1`` is the plain conditional model, ``w = 0`` the unconditional one, ``w > 1``
pushes samples towards the condition (sharper, less diverse). The combination is linear,
so it applies equally to eps, x0 and v outputs.

The model is anything called as ``model(x, t, cond=..., attrs=..., drop_cond=...,
drop_attrs=...)`` with boolean ``(B,)`` drop masks, as
:class:`demgen.models.denoiser.ConditionalDenoiser` is. Nothing here imports the rest
of demgen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor


class GuidableModel(Protocol):
    """A denoiser whose conditions can be dropped per sample."""

    def __call__(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = ...,
        attrs: Tensor | None = ...,
        drop_cond: Tensor | None = ...,
        drop_attrs: Tensor | None = ...,
    ) -> Tensor: ...


class Scheduler(Protocol):
    """What :func:`sample_loop` needs of a scheduler (ours or diffusers')."""

    timesteps: Tensor

    def set_timesteps(self, num_inference_steps: int) -> None: ...

    def step(self, model_output: Tensor, timestep: Tensor, sample: Tensor, **kw: object): ...


def cfg_drop_mask(
    batch_size: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Which samples of a training batch lose their conditions: ``(B,)`` bool, each True
    with probability ``p`` (Ho & Salimans 2022 use p = 0.1 to 0.2)."""
    return torch.rand(batch_size, generator=generator, device=device) < p


def _batch_timesteps(t: Tensor | int, batch_size: int, device: torch.device) -> Tensor:
    """``t`` as a ``(B,)`` long tensor (a scalar is broadcast)."""
    t = torch.as_tensor(t, device=device).long()
    return t.expand(batch_size) if t.ndim == 0 else t


def guided_output(
    model: GuidableModel,
    x: Tensor,
    t: Tensor | int,
    cond: Tensor | None,
    attrs: Tensor | None,
    scale: float,
    keep_cond: bool = False,
) -> Tensor:
    """Classifier-free guided output ``uncond + scale * (cond - uncond)``.

    The unconditional output drops the attributes and, unless ``keep_cond``, the
    conditioning image too (``keep_cond=True`` guides on the attributes alone, e.g. "more
    snow" on a DEM-conditioned image). Both outputs come from one forward pass on a batch
    of ``2B``; ``scale`` 1 and 0 take a single pass of ``B`` and return the conditional and
    unconditional outputs exactly.
    """
    B = x.shape[0]
    t = _batch_timesteps(t, B, x.device)
    no = torch.zeros(B, dtype=torch.bool, device=x.device)
    yes = torch.ones(B, dtype=torch.bool, device=x.device)
    drop_c = no if keep_cond else yes
    if scale == 1:
        return model(x, t, cond=cond, attrs=attrs, drop_cond=no, drop_attrs=no)
    if scale == 0:
        return model(x, t, cond=cond, attrs=attrs, drop_cond=drop_c, drop_attrs=yes)

    def twice(a: Tensor | None) -> Tensor | None:
        return None if a is None else torch.cat([a, a])

    out = model(
        torch.cat([x, x]),  # (2B, C, H, W): first half conditional, second unconditional
        torch.cat([t, t]),
        cond=twice(cond),
        attrs=twice(attrs),
        drop_cond=torch.cat([no, drop_c]),
        drop_attrs=torch.cat([no, yes]),
    )
    out_cond, out_uncond = out[:B], out[B:]
    return out_uncond + scale * (out_cond - out_uncond)


@torch.no_grad()
def sample_loop(
    denoise: Callable[[Tensor, Tensor], Tensor],
    scheduler: Scheduler,
    noise: Tensor,
    num_inference_steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run a scheduler from ``x_T = noise`` to a sample.

    ``denoise(x_t, t)`` returns the model output for a ``(B,)`` step tensor, e.g.
    ``lambda x, t: guided_output(model, x, t, cond, attrs, 2.0)``. ``generator`` draws
    the per-step noise of stochastic samplers (DDPM, DDIM with ``eta > 0``).
    """
    scheduler.set_timesteps(num_inference_steps)
    x = noise
    for t in scheduler.timesteps:
        out = denoise(x, _batch_timesteps(t, x.shape[0], x.device))
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x
