"""Noise schedules, training targets and samplers of demgen.schedulers."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from demgen.schedulers import (
    PREDICTION_TYPES,
    DDIMScheduler,
    DDPMScheduler,
    betas_for_schedule,
    eps_from_output,
    sample_loop,
    x0_from_output,
)

SCHEDULES = ("linear", "cosine")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_alpha_bar_is_monotone_and_ends_near_zero(schedule):
    ab = DDPMScheduler(beta_schedule=schedule).alphas_cumprod
    assert ab.shape == (1000,)
    assert (ab.diff() < 0).all()  # strictly decreasing: every step adds noise
    assert ab[0] > 0.999  # step 0 is almost clean
    assert ab[-1] < 1e-4  # the last step is almost pure noise
    betas = betas_for_schedule(schedule)
    assert ((betas > 0) & (betas <= 0.999)).all()


def test_cosine_schedule_is_nichol_dhariwal_closed_form():
    ab = DDPMScheduler(beta_schedule="cosine").alphas_cumprod
    s, T = 0.008, 1000

    def f(t: int) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 10, 250, 500, 900, 990):  # alpha_bar_t = f(t+1) / f(0) before the beta clip
        assert ab[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="beta schedule"):
        DDPMScheduler(beta_schedule="sigmoid")
    with pytest.raises(ValueError, match="prediction_type"):
        DDPMScheduler(prediction_type="score")
    with pytest.raises(ValueError, match="timestep_spacing"):
        DDIMScheduler(timestep_spacing="linspace")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_add_noise_at_step_zero_is_almost_identity(schedule):
    sched = DDPMScheduler(beta_schedule=schedule)
    x0 = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    xt = sched.add_noise(x0, noise, torch.zeros(4, dtype=torch.long))
    alpha, sigma = sched.alpha_sigma(0, x0)
    assert alpha.item() == pytest.approx(1.0, abs=1e-4) and sigma.item() < 0.011
    assert (xt - x0).abs().max() < 0.05
    # and at the last step the sample is (almost) the noise
    xT = sched.add_noise(x0, noise, torch.full((4,), 999))
    assert (xT - noise).abs().max() < 0.05


def test_add_noise_broadcasts_one_step_per_sample():
    sched = DDPMScheduler()
    x0, noise = torch.ones(3, 2, 4, 4), torch.zeros(3, 2, 4, 4)
    xt = sched.add_noise(x0, noise, torch.tensor([0, 500, 999]))
    expected = sched.alphas_cumprod[[0, 500, 999]].sqrt().float()
    assert torch.allclose(xt[:, 0, 0, 0], expected)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_eps_x0_v_conversions_invert_each_other(schedule, kind):
    g = torch.Generator().manual_seed(2)
    sched = DDPMScheduler(beta_schedule=schedule, prediction_type=kind)
    x0 = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 100, 500, 998, 999])
    xt = sched.add_noise(x0, eps, t)
    target = sched.training_target(x0, eps, t)
    alpha, sigma = sched.alpha_sigma(t, xt)
    assert torch.allclose(x0_from_output(target, xt, alpha, sigma, kind), x0, atol=1e-9)
    assert torch.allclose(eps_from_output(target, xt, alpha, sigma, kind), eps, atol=1e-9)
    v = sched.get_velocity(x0, eps, t)
    assert torch.allclose(v, alpha * eps - sigma * x0)  # Salimans & Ho 2022
    # every parameterisation of the same (x0, eps) maps back to it
    for other in PREDICTION_TYPES:
        out = sched.training_target(x0, eps, t, other)
        assert torch.allclose(sched.predict_x0(out, t, xt, other), x0, atol=1e-9)


def oracle(sched: DDPMScheduler, x0: torch.Tensor, kind: str):
    """A 'model' that returns the true target: the noise implied by x_t and the known x0."""

    def denoise(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = sched.alpha_sigma(t, xt)
        eps = (xt - alpha * x0) / sigma
        return sched.training_target(x0, eps, t, kind)

    return denoise


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize(
    ("schedule", "kind", "eta"),
    [
        ("cosine", "v_prediction", 0.0),
        ("cosine", "epsilon", 0.0),
        ("cosine", "sample", 0.0),
        ("linear", "v_prediction", 0.0),
        ("cosine", "v_prediction", 1.0),
    ],
)
def test_ddim_with_an_oracle_recovers_x0(steps, schedule, kind, eta):
    sched = DDIMScheduler(beta_schedule=schedule, prediction_type=kind, eta=eta)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(2, 1, 16, 16, generator=g)
    out = sample_loop(oracle(sched, x0, kind), sched, noise, steps, generator=g)
    assert len(sched.timesteps) == steps
    assert (out - x0).abs().max() < 1e-4


def test_ddpm_ancestral_sampling_with_an_oracle_recovers_x0():
    sched = DDPMScheduler()
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(1, 1, 16, 16, generator=g) * 2 - 1
    out = sample_loop(oracle(sched, x0, "v_prediction"), sched, torch.randn(1, 1, 16, 16), 20, g)
    assert (out - x0).abs().max() < 1e-4


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("steps", [1, 7, 25, 50, 1000])
def test_timesteps_are_distinct_descending_training_steps(spacing, steps):
    sched = DDIMScheduler(timestep_spacing=spacing)
    sched.set_timesteps(steps)
    ts = sched.timesteps
    assert len(ts) == steps and len(set(ts.tolist())) == steps
    assert (ts.diff() < 0).all() and ts.min() >= 0 and ts.max() <= 999
    if spacing == "trailing":
        assert ts[0] == 999  # sampling starts from (almost) pure noise
    else:
        assert ts[-1] == 0
    with pytest.raises(ValueError):
        sched.set_timesteps(0)


def _random_denoiser(seed: int):
    """A fixed random smooth function of (x, t): not a trained model, but not trivial."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, 1, 3, 3, generator=g) * 0.2

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale = (t.float() / 1000)[:, None, None, None]
        return torch.tanh(torch.nn.functional.conv2d(x, w, padding=1)) * scale

    return denoise


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_is_deterministic_given_the_seed(eta):
    sched = DDIMScheduler(eta=eta)
    denoise = _random_denoiser(5)

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(2, 1, 16, 16, generator=g)
        return sample_loop(denoise, sched, noise, 25, generator=g)

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_clip_sample_bounds_the_x0_estimate():
    sched = DDIMScheduler(prediction_type="sample", clip_sample=1.0)
    sched.set_timesteps(10)
    out = sched.step(torch.full((1, 1, 4, 4), 5.0), sched.timesteps[0], torch.zeros(1, 1, 4, 4))
    assert out.pred_original_sample.max() == 1.0


def test_ddim_from_training_scheduler_shares_its_schedule():
    train = DDPMScheduler(beta_schedule="linear", prediction_type="epsilon")
    ddim = DDIMScheduler.from_scheduler(train, eta=0.3)
    assert torch.equal(ddim.alphas_cumprod, train.alphas_cumprod)
    assert ddim.prediction_type == "epsilon" and ddim.eta == 0.3


def test_schedulers_import_nothing_else_from_demgen():
    code = (
        "import sys, demgen.schedulers; "
        "print(sorted(m for m in sys.modules if m.startswith('demgen') "
        "and not m.startswith('demgen.schedulers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['demgen']"


# ---- agreement with diffusers, where it happens to be installed (it is not a dependency) ----


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_ddim_agrees_with_diffusers(schedule, spacing, kind):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule={"linear": "linear", "cosine": "squaredcos_cap_v2"}[schedule],
        prediction_type=kind,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing=spacing,
    )
    ours = DDIMScheduler(beta_schedule=schedule, prediction_type=kind, timestep_spacing=spacing)
    assert torch.allclose(ref.alphas_cumprod.double(), ours.alphas_cumprod, atol=1e-5)
    ref.set_timesteps(50)
    ours.set_timesteps(50)
    assert ref.timesteps.tolist() == ours.timesteps.tolist()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 1, 8, 8, generator=g)
    for t in ours.timesteps[::7]:
        out = torch.randn(1, 1, 8, 8, generator=g)
        a = ref.step(out, t, x).prev_sample
        b = ours.step(out, t, x).prev_sample
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), int(t)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_ddpm_training_and_ancestral_step_agree_with_diffusers(kind):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(
        beta_schedule="squaredcos_cap_v2", prediction_type=kind, clip_sample=False
    )
    ours = DDPMScheduler(beta_schedule="cosine", prediction_type=kind)
    g = torch.Generator().manual_seed(9)
    x0, eps = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    t = torch.tensor([0, 400, 999])
    assert torch.allclose(ref.add_noise(x0, eps, t), ours.add_noise(x0, eps, t), atol=1e-5)
    assert torch.allclose(ref.get_velocity(x0, eps, t), ours.get_velocity(x0, eps, t), atol=1e-5)
    for t in (999, 500, 1, 0):  # full-length chain: the previous step is t - 1
        out, x = torch.randn(1, 1, 8, 8, generator=g), torch.randn(1, 1, 8, 8, generator=g)
        a = ref.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        b = ours.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), t
