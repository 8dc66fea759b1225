"""The three diffusion tasks (demgen.tasks.diffusion_tasks): the sampler turns an exact
denoiser into the exact target in the output's units, training lowers the loss, the
checkpoint keeps only the task's own settings and loads back, and every recipe of
configs/diffusion/ trains through ``demgen fit``."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest
import torch

from demgen.data.normalize import ElevationNorm, GlobalShiftNorm, PercentileImageNorm
from demgen.tasks.diffusion import DiffusionConfig
from demgen.tasks.diffusion_tasks import (
    Dem2ImageDiffusionTask,
    Image2DemDiffusionTask,
    TemporalDiffusionTask,
)
from demgen.tasks.registry import load_task

BANDS = ["B2", "B3", "B4", "B8"]
INORM = PercentileImageNorm(BANDS, [200.0] * 4, [3000.0] * 4)
ENORM = ElevationNorm(100.0, 900.0)
TINY = {"base_channels": 8, "channel_mults": [1, 2], "sample_steps": 4, "val_steps": 2}
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "diffusion"

pytestmark = pytest.mark.usefixtures("one_thread")


def _make(name: str, n: int = 16, b: int = 2, **kw):
    """A tiny task, one training batch of it and named inputs for prediction."""
    torch.manual_seed(0)
    common = {"chip_size": n, "pixel_size": 10.0, "diffusion": {**TINY, **kw},
              "channels_last": False}  # fmt: skip
    mask = torch.ones(b, 1, n, n, dtype=torch.bool)
    mask[0, 0, :3, :5] = False
    img = torch.rand(b, 4, n, n)
    if name == "image2dem":
        task = Image2DemDiffusionTask(INORM.to_dict(), ENORM.to_dict(), **common)
        batch = {"image": img, "target": torch.rand(b, 1, n, n) * 2 - 1, "mask": mask}
    elif name == "dem2image":
        task = Dem2ImageDiffusionTask(INORM.to_dict(), ENORM.to_dict(), **common)
        batch = {"input": torch.rand(b, 1, n, n) * 2 - 1, "target": img, "mask": mask}
    else:
        task = TemporalDiffusionTask(INORM.to_dict(), None, use_gap=True, **common)
        mask_t = (torch.rand(b, 1, n, n) > 0.7).float()
        batch = {"image_t0": img, "target": img + 0.3 * mask_t, "mask": mask, "mask_t": mask_t,
                 "gap_days": torch.tensor([90.0, 180.0])[:b]}  # fmt: skip
    return task, batch


@pytest.mark.parametrize("name", ["image2dem", "dem2image", "temporal"])
def test_an_exact_denoiser_samples_the_exact_target(name):
    """With the true v at every step (v = alpha eps - sigma x0, eps implied by x_t), DDIM
    lands on x0 from any noise: the target itself, in the host's normalization and decoded."""
    task, batch = _make(name)
    task.eval()
    cond, target, mask = task.diffusion_batch(batch)
    x0 = task.to_x0(target, cond, torch.ones_like(mask))
    sched = task.noise_schedule

    def exact(x, t, c, guidance=None, attrs=None):
        alpha, sigma = sched.alpha_sigma(int(t), x)
        eps = (x - alpha * x0) / sigma
        return alpha * eps - sigma * x0

    task.denoise = exact
    noise = torch.randn_like(x0)
    y = task.sample_network(cond, noise, steps=5)
    torch.testing.assert_close(y, target.float(), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(task.from_x0(noise, cond), target.float(), atol=0.1)


@pytest.mark.parametrize("name", ["image2dem", "dem2image", "temporal"])
def test_training_lowers_the_loss(name):
    task, batch = _make(name, ema_decay=0.0)
    task.train()
    cond, target, mask = task.diffusion_batch(batch)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([100, 600])
    noise = torch.randn(target.shape[0], task.target_channels, *target.shape[-2:], generator=g)
    opt = torch.optim.Adam(task.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = task.diffusion_loss(cond, target, mask, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses[::8]


@pytest.mark.parametrize("name", ["image2dem", "dem2image", "temporal"])
def test_checkpoint_keeps_the_tasks_own_settings_and_loads(name, tmp_path):
    task, _ = _make(name)
    assert task.spec.diffusion and task.spec.stochastic
    assert task.hparams.diffusion == DiffusionConfig.from_dict(TINY).to_dict()
    assert not {"generator", "lambda_l1", "lr_patience", "base"} & set(task.hparams)
    torch.nn.init.normal_(task.ema.module.conv_out.weight)  # EMA weights differ from live
    trainer = lightning.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False)  # fmt: skip
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = load_task(tmp_path / "m.ckpt")
    assert type(loaded) is type(task) and loaded.spec == task.spec
    for a, b in zip(loaded.denoiser.parameters(), task.denoiser.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(loaded.denoiser.conv_out.weight, loaded.model.conv_out.weight)


def test_unknown_settings_and_relative_heights_are_refused():
    with pytest.raises(ValueError, match="unknown diffusion settings"):
        DiffusionConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="absolute"):
        Image2DemDiffusionTask(INORM.to_dict(), GlobalShiftNorm(400.0).to_dict(), diffusion=TINY)


@pytest.mark.parametrize("recipe", sorted(p.stem for p in CONFIGS.glob("*_small.yaml")))
def test_recipe_trains_and_its_checkpoint_loads(recipe, tmp_path, monkeypatch):
    """``demgen fit`` on each small recipe (a tiny world, one epoch), then ``load_task``."""
    from demgen.training import fit

    monkeypatch.chdir(tmp_path)
    world = ["--data.init_args.size", "128", "--data.init_args.n_scenes", "2",
             "--data.init_args.chip_size", "32"]  # fmt: skip
    if recipe.startswith("temporal"):
        world += ["--data.init_args.times", "3"]
    run = fit(["--config", str(CONFIGS / f"{recipe}.yaml"), "--run_root", str(tmp_path / "runs"),
               "--data.init_args.cache_dir", str(tmp_path / "cache"), *world,
               "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
               "--model.init_args.diffusion", str({**TINY, "val_steps": 1})])  # fmt: skip
    task = load_task(run / "checkpoints" / "last.ckpt")
    assert task.task_name == recipe.split("_")[0] + "_diffusion"
    assert task.task_name.endswith("_diffusion") and task.spec.diffusion
    assert task.hparams.pixel_size == pytest.approx(10)


def test_image_attributes_by_hand():
    from demgen.tasks.attributes import image_attributes

    # four pixels (B2, B3, B4, B8): snow, vegetation, water, bare soil; one more invalid
    px = [(0.8, 0.8, 0.8, 0.75), (0.03, 0.06, 0.04, 0.40), (0.06, 0.08, 0.05, 0.02),
          (0.10, 0.12, 0.15, 0.20), (0.9, 0.9, 0.9, 0.9)]  # fmt: skip
    refl = torch.tensor(px).T.reshape(1, 4, 1, 5)
    mask = torch.tensor([True, True, True, True, False]).reshape(1, 1, 1, 5)
    got = image_attributes(refl, BANDS, mask, ["snow", "vegetation", "water"])
    # NDVI: snow -0.03, vegetation 0.82, water -0.43, soil 0.14; NDWI: water 0.6, snow 0.03
    torch.testing.assert_close(got, torch.tensor([[0.25, 0.25, 0.25]]))


def test_attributes_condition_training_and_sampling():
    from demgen.inference.sampling import sample_scene  # noqa: F401  (the path they reach)

    names = ["snow", "vegetation", "water"]
    task, batch = _make("dem2image", attributes=names)
    assert task.model.attr_dim == 3 and task.hparams.diffusion["attributes"] == names
    for net in (task.model, task.denoiser):  # zero-initialised output layers drawn at random
        for p in net.parameters():
            if not p.any():
                torch.nn.init.normal_(p, std=0.1)
    batch["target"][:, :, :, :8] = 3.0  # the left half bright and grey: snow
    cond, target, mask = task.diffusion_batch(batch)
    attrs = task.batch_attributes(target, mask)
    assert attrs.shape == (2, 3) and ((attrs >= 0) & (attrs <= 1)).all()
    assert (attrs[:, 0] > 0.4).all()  # about half of each chip is snow
    task.train()
    t, noise = torch.tensor([300, 700]), torch.randn(2, 4, 16, 16)
    with_attrs = task.diffusion_loss(cond, target, mask, t=t, noise=noise, attrs=attrs)
    without = task.diffusion_loss(cond, target, mask, t=t, noise=noise, attrs=attrs,
                                  drop_attrs=torch.ones(2, dtype=torch.bool))  # fmt: skip
    assert not torch.isclose(with_attrs, without)
    with_attrs.backward()
    assert task.model.attr_mlp[0].weight.grad.abs().sum() > 0  # the attributes are learnt
    task.eval()
    plain = task.sample_network(cond, noise)
    snowy = task.sample_network(cond, noise, attrs=task.attribute_tensor(
        {"snow": 1.0, "vegetation": 0.0, "water": 0.0}, 2, "cpu"))  # fmt: skip
    assert not torch.allclose(plain, snowy)
    with pytest.raises(ValueError, match="missing"):
        task.attribute_tensor({"snow": 1.0}, 2, "cpu")
    with pytest.raises(ValueError, match="unknown"):
        task.attribute_tensor({"snow": 1.0, "vegetation": 0, "water": 0, "sand": 1}, 2, "cpu")
    with pytest.raises(ValueError, match="needs bands"):
        Image2DemDiffusionTask(INORM.to_dict(), ENORM.to_dict(), diffusion={"attributes": ["snow"]})
