"""Exponential moving average of weights, with a warm-up of the decay.

Built on :class:`torch.optim.swa_utils.AveragedModel` with a custom ``multi_avg_fn``, so
the same function plugs into Lightning's ``WeightAveraging(multi_avg_fn=...)`` callback.
After ``n`` updates the average moves towards the live weights by

    ema <- decay_n * ema + (1 - decay_n) * w,    decay_n = min(max_decay, (1 + n) / (warmup + n))

the warm-up of TensorFlow's ``tf.train.ExponentialMovingAverage(num_updates=...)``: early
averages forget the random initialisation quickly, later ones average over about
``1 / (1 - max_decay)`` steps. The first update copies the weights (``AveragedModel``).
Diffusion samples from the EMA weights (Ho et al. 2020 use ``max_decay = 0.9999``;
short CPU runs want 0.99 to 0.999).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(num_averaged: int, max_decay: float = 0.999, warmup: float = 10.0) -> float:
    """``min(max_decay, (1 + n) / (warmup + n))`` for ``n`` updates so far."""
    return min(max_decay, (1.0 + num_averaged) / (warmup + num_averaged))


def ema_multi_avg_fn(
    max_decay: float = 0.999, warmup: float = 10.0
) -> Callable[[list[Tensor], list[Tensor], Tensor | int], None]:
    """An ``AveragedModel`` ``multi_avg_fn`` for EMA with a warm-up (in place, foreach)."""
    if not 0.0 <= max_decay < 1.0:
        raise ValueError(f"max_decay must be in [0, 1), got {max_decay}")

    @torch.no_grad()
    def update(ema: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        weight = 1.0 - ema_decay(int(num_averaged), max_decay, warmup)
        for e, c in zip(ema, current, strict=True):
            if e.is_floating_point():
                e.lerp_(c, weight)  # e + weight * (c - e)
            else:  # integer buffers (counters) follow the model
                e.copy_(c)

    return update


def ema_model(
    model: nn.Module,
    max_decay: float = 0.999,
    warmup: float = 10.0,
    use_buffers: bool = True,
) -> AveragedModel:
    """A frozen EMA copy of ``model``; call ``.update_parameters(model)`` after each
    optimiser step and sample from ``.module``."""
    averaged = AveragedModel(
        model, multi_avg_fn=ema_multi_avg_fn(max_decay, warmup), use_buffers=use_buffers
    )
    averaged.requires_grad_(False)
    return averaged
