"""DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models").

A model trained with DDPM's objective samples in far fewer steps on a subsequence
``t = tau_n > ... > tau_1`` of the training steps. From ``x_t`` to ``x_s`` (``s`` the next
step of the subsequence; ``ab = alpha_bar``), eq. 12 of the paper:

    x0_hat  = x0 implied by the model output at x_t
    eps_hat = (x_t - sqrt(ab_t) * x0_hat) / sqrt(1 - ab_t)
    sigma   = eta * sqrt((1 - ab_s) / (1 - ab_t)) * sqrt(1 - ab_t / ab_s)        (eq. 16)
    x_s     = sqrt(ab_s) * x0_hat + sqrt(1 - ab_s - sigma^2) * eps_hat + sigma * z

``eta = 0`` is deterministic (the sampler is a fixed map from the initial noise to the
sample), ``eta = 1`` has DDPM's posterior variance. After the last step ``ab_s = 1``, so
the result is ``x0_hat`` itself (diffusers' ``set_alpha_to_one=True``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from demgen.schedulers.ddpm import DDPMScheduler, SchedulerOutput, eps_from_output


class DDIMScheduler(DDPMScheduler):
    """DDIM with ``eta``, on the schedule and training targets of :class:`DDPMScheduler`.

    sched = DDIMScheduler(beta_schedule="cosine", prediction_type="v_prediction")
    sched.set_timesteps(25)
    for t in sched.timesteps:
        x = sched.step(model(x, t), t, x).prev_sample
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "cosine",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "v_prediction",
        clip_sample: float | None = None,
        timestep_spacing: str = "trailing",
        eta: float = 0.0,
    ) -> None:
        super().__init__(
            num_train_timesteps,
            beta_schedule,
            beta_start,
            beta_end,
            prediction_type,
            clip_sample,
            timestep_spacing,
        )
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = eta
        self.set_timesteps(50)

    @classmethod
    def from_scheduler(cls, scheduler: DDPMScheduler, eta: float = 0.0) -> DDIMScheduler:
        """A DDIM sampler on the same schedule and prediction type as a training scheduler."""
        new = cls.__new__(cls)
        new.__dict__.update(scheduler.__dict__)
        new.eta = eta
        new.set_timesteps(50)
        return new

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        prediction_type: str | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        variance_noise: Tensor | None = None,
    ) -> SchedulerOutput:
        """One DDIM step ``x_t -> x_s`` (module docstring, eq. 12 and 16).

        ``prediction_type`` and ``eta`` override the scheduler's. With ``eta > 0`` the noise
        ``z`` is ``variance_noise`` when given (e.g. drawn from global pixel coordinates),
        else drawn with ``generator``.
        """
        eta = self.eta if eta is None else eta
        t = int(timestep)
        s = self.previous_timestep(t)
        ab_t, ab_s = self._alpha_bar(t, sample), self._alpha_bar(s, sample)
        kind = prediction_type or self.prediction_type
        x0 = self.predict_x0(model_output, t, sample, kind)
        if self.clip_sample is None:
            eps = eps_from_output(model_output, sample, ab_t.sqrt(), (1 - ab_t).sqrt(), kind)
        else:  # the eps consistent with the clipped x0: x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps
            eps = (sample - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()
        prev = ab_s.sqrt() * x0 + (1 - ab_s - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and s >= 0:
            if variance_noise is None:
                variance_noise = torch.randn(
                    sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
                )
            prev = prev + sigma * variance_noise
        return SchedulerOutput(prev, x0)
