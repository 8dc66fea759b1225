"""Diffusion noise schedules and samplers, one algorithm per module (pure PyTorch).

The interface follows diffusers' schedulers so either can stand behind a task:
``add_noise(x0, noise, t)`` for training, ``set_timesteps(n)`` then
``step(model_output, t, sample).prev_sample`` for sampling, and prediction types
``"epsilon"``, ``"sample"`` (x0) and ``"v_prediction"``.

- :mod:`demgen.schedulers.ddpm`: beta schedules, forward process, training targets,
  conversions between the three parameterisations, ancestral DDPM sampling.
- :mod:`demgen.schedulers.ddim`: deterministic (``eta=0``) or stochastic DDIM sampling.
- :mod:`demgen.schedulers.guidance`: classifier-free guidance and a sampling loop.

Nothing here imports the rest of demgen.
"""

from __future__ import annotations

from demgen.schedulers.ddim import DDIMScheduler
from demgen.schedulers.ddpm import (
    PREDICTION_TYPES,
    DDPMScheduler,
    SchedulerOutput,
    betas_for_schedule,
    eps_from_output,
    v_from_x0_eps,
    x0_from_output,
)
from demgen.schedulers.guidance import cfg_drop_mask, guided_output, sample_loop

__all__ = [
    "PREDICTION_TYPES",
    "DDIMScheduler",
    "DDPMScheduler",
    "SchedulerOutput",
    "betas_for_schedule",
    "cfg_drop_mask",
    "eps_from_output",
    "guided_output",
    "sample_loop",
    "v_from_x0_eps",
    "x0_from_output",
]
