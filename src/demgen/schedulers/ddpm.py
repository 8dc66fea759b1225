"""DDPM: beta schedules, the forward (noising) process, training targets, ancestral sampling.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"; Salimans & Ho 2022,
"Progressive Distillation for Fast Sampling of Diffusion Models"), for a training step
``t`` in ``0 .. T-1``:

    beta_t                          variance added at step t
    alpha_bar_t = prod_{s<=t} (1 - beta_s)
    alpha_t     = sqrt(alpha_bar_t)          signal scale
    sigma_t     = sqrt(1 - alpha_bar_t)      noise scale   (alpha_t^2 + sigma_t^2 = 1)
    x_t         = alpha_t * x0 + sigma_t * eps,   eps ~ N(0, I)
    v           = alpha_t * eps - sigma_t * x0

A network predicts one of ``eps`` ("epsilon"), ``x0`` ("sample") or ``v``
("v_prediction"); given ``x_t`` any one determines the other two (see
:func:`x0_from_output`, :func:`eps_from_output`). Schedule arrays are computed in float64
and cast to the sample's dtype when used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
BETA_SCHEDULES = ("linear", "cosine")
TIMESTEP_SPACINGS = ("trailing", "leading")


@dataclass
class SchedulerOutput:
    """One sampling step's result, named as in diffusers."""

    prev_sample: Tensor  # x_{t_prev}, the next (less noisy) sample
    pred_original_sample: Tensor  # the model's estimate of x0 at this step


def betas_for_schedule(
    schedule: str,
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    cosine_s: float = 0.008,
    max_beta: float = 0.999,
) -> Tensor:
    """The ``T`` betas of a named schedule, float64.

    - ``"linear"`` (Ho et al. 2020): ``beta_t`` evenly spaced from ``beta_start`` to
      ``beta_end`` (1e-4 to 0.02 for T = 1000).
    - ``"cosine"`` (Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic
      Models", eq. 17): ``alpha_bar(u) = cos^2(((u + s) / (1 + s)) * pi / 2)`` for
      ``u = t / T``, ``beta_t = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), max_beta)``
      with ``s = 0.008`` and ``max_beta = 0.999`` (the clip avoids the singularity at
      ``u = 1``). This is diffusers' ``"squaredcos_cap_v2"``.
    """
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    if schedule == "cosine":
        u = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
        alpha_bar = torch.cos((u + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
    raise ValueError(f"unknown beta schedule {schedule!r}; choose from {BETA_SCHEDULES}")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unknown prediction_type {prediction_type!r}; choose from {PREDICTION_TYPES}"
        )


def v_from_x0_eps(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Velocity ``v = alpha_t * eps - sigma_t * x0`` (Salimans & Ho 2022, sec. 4)."""
    return alpha * eps - sigma * x0


def x0_from_output(
    output: Tensor, sample: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str
) -> Tensor:
    """The x0 implied by a model output at ``x_t = sample``.

    - epsilon: ``x0 = (x_t - sigma_t * eps) / alpha_t``
    - sample:  ``x0 = output``
    - v:       ``x0 = alpha_t * x_t - sigma_t * v``   (uses ``alpha_t^2 + sigma_t^2 = 1``)
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return (sample - sigma * output) / alpha
    if prediction_type == "sample":
        return output
    return alpha * sample - sigma * output


def eps_from_output(
    output: Tensor, sample: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str
) -> Tensor:
    """The noise eps implied by a model output at ``x_t = sample``.

    - epsilon: ``eps = output``
    - sample:  ``eps = (x_t - alpha_t * x0) / sigma_t``
    - v:       ``eps = sigma_t * x_t + alpha_t * v``
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return output
    if prediction_type == "sample":
        return (sample - alpha * output) / sigma
    return sigma * sample + alpha * output


class DDPMScheduler:
    """Beta schedule, forward process and training targets; ancestral DDPM sampling.

    ``DDPMScheduler(beta_schedule="cosine", prediction_type="v_prediction")`` is the
    training-side object of a diffusion task; :class:`~demgen.schedulers.ddim.DDIMScheduler`
    subclasses it and replaces only ``set_timesteps``/``step``.
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
    ) -> None:
        _check_prediction_type(prediction_type)
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"unknown timestep_spacing {timestep_spacing!r}; choose from {TIMESTEP_SPACINGS}"
            )
        self.timestep_spacing = timestep_spacing
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample  # clamp the x0 estimate to +-clip_sample when set
        self.betas = betas_for_schedule(beta_schedule, num_train_timesteps, beta_start, beta_end)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # alpha_bar_t, (T,)
        self.num_inference_steps = num_train_timesteps
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)

    # ---- the schedule at given steps, broadcast against a sample ----

    def _alpha_bar(self, timesteps: Tensor | int, like: Tensor) -> Tensor:
        """``alpha_bar_t`` for each batch element, shaped ``(B, 1, ..., 1)`` like ``like``;
        a negative step means "before step 0": ``alpha_bar = 1`` (the clean sample)."""
        t = torch.as_tensor(timesteps, device=self.alphas_cumprod.device).long().reshape(-1)
        ab = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones_like(t).double())
        ab = ab.to(device=like.device, dtype=like.dtype)
        return ab.reshape(-1, *([1] * (like.ndim - 1)))

    def alpha_sigma(self, timesteps: Tensor | int, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))``, broadcastable."""
        ab = self._alpha_bar(timesteps, like)
        return ab.sqrt(), (1 - ab).sqrt()

    # ---- training ----

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """Forward process ``x_t = alpha_t * x0 + sigma_t * eps`` (Ho et al. 2020, eq. 4)."""
        alpha, sigma = self.alpha_sigma(timesteps, original_samples)
        return alpha * original_samples + sigma * noise

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """The v-prediction target ``alpha_t * eps - sigma_t * x0`` (diffusers' name)."""
        alpha, sigma = self.alpha_sigma(timesteps, sample)
        return v_from_x0_eps(sample, noise, alpha, sigma)

    def training_target(
        self,
        original_samples: Tensor,
        noise: Tensor,
        timesteps: Tensor,
        prediction_type: str | None = None,
    ) -> Tensor:
        """What the network should output for ``x_t = add_noise(x0, eps, t)``:
        ``eps``, ``x0`` or ``v`` by ``prediction_type`` (default: the scheduler's)."""
        kind = prediction_type or self.prediction_type
        _check_prediction_type(kind)
        if kind == "epsilon":
            return noise
        if kind == "sample":
            return original_samples
        return self.get_velocity(original_samples, noise, timesteps)

    def sample_timesteps(
        self, batch_size: int, generator: torch.Generator | None = None, device: str = "cpu"
    ) -> Tensor:
        """Uniform training steps ``t ~ U{0, ..., T-1}``, shape ``(B,)``."""
        return torch.randint(
            0, self.num_train_timesteps, (batch_size,), generator=generator, device=device
        )

    def predict_x0(
        self,
        model_output: Tensor,
        timesteps: Tensor | int,
        sample: Tensor,
        prediction_type: str | None = None,
    ) -> Tensor:
        """The x0 estimate of a model output at ``x_t``, clipped when ``clip_sample`` is set."""
        alpha, sigma = self.alpha_sigma(timesteps, sample)
        x0 = x0_from_output(
            model_output, sample, alpha, sigma, prediction_type or self.prediction_type
        )
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        return x0

    # ---- sampling: ancestral DDPM on a (possibly strided) subsequence of steps ----

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the ``n`` sampling steps, descending, into ``self.timesteps``.

        ``"trailing"`` (default): ``round(T - k T/n) - 1`` for ``k = 0..n-1``, i.e.
        ``T-1, ..., T/n - 1``: the first step is the last training step, where ``x_T`` is
        almost pure noise (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
        Steps are Flawed", table 2). ``"leading"``: ``k * (T // n)`` for ``k = n-1..0``
        (diffusers' DDIM default; its first step stops short of ``T-1``).
        """
        n, T = num_inference_steps, self.num_train_timesteps
        if not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be in 1..{T}, got {n}")
        self.num_inference_steps = n
        if self.timestep_spacing == "trailing":
            steps = torch.round(torch.arange(T, 0, -T / n, dtype=torch.float64)).long() - 1
            self.timesteps = steps[:n]
        else:
            self.timesteps = torch.arange(n - 1, -1, -1) * (T // n)

    def previous_timestep(self, timestep: int) -> int:
        """The step after ``timestep`` in ``self.timesteps`` (``-1``: the clean sample)."""
        ts = self.timesteps.tolist()
        i = ts.index(int(timestep))
        return ts[i + 1] if i + 1 < len(ts) else -1

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        prediction_type: str | None = None,
        generator: torch.Generator | None = None,
        variance_noise: Tensor | None = None,
    ) -> SchedulerOutput:
        """One ancestral step ``x_t -> x_s`` (``s`` the previous step) from the posterior
        ``q(x_s | x_t, x0)`` (Ho et al. 2020, eq. 6-7, with ``beta = 1 - alpha_bar_t /
        alpha_bar_s`` for strided steps):

            mean = (sqrt(ab_s) * beta * x0 + sqrt(1 - beta) * (1 - ab_s) * x_t) / (1 - ab_t)
            var  = (1 - ab_s) / (1 - ab_t) * beta

        ``variance_noise`` replaces the drawn noise (e.g. noise drawn from global pixel
        coordinates); there is none on the last step.
        """
        t = int(timestep)
        s = self.previous_timestep(t)
        ab_t, ab_s = self._alpha_bar(t, sample), self._alpha_bar(s, sample)
        beta = 1 - ab_t / ab_s
        x0 = self.predict_x0(model_output, t, sample, prediction_type)
        mean = (ab_s.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_s) * sample) / (1 - ab_t)
        if s < 0:
            return SchedulerOutput(mean, x0)
        if variance_noise is None:
            variance_noise = torch.randn(
                sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
            )
        std = ((1 - ab_s) / (1 - ab_t) * beta).sqrt()
        return SchedulerOutput(mean + std * variance_noise, x0)
