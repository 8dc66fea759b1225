"""Training tasks: overfitting one batch, metres metrics, checkpoints, DRPAN gradients."""

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch.nn import functional as F

from demgen.data.normalize import ElevationNorm, GlobalShiftNorm, ImageNorm
from demgen.inference.scene import predict_scene
from demgen.io.raster import write_raster
from demgen.tasks.common import TASK_KEY, MetresMetrics, to_metres
from demgen.tasks.drpan import DRPANTask
from demgen.tasks.pix2pix import Pix2PixTask
from demgen.tasks.registry import load_task
from demgen.tasks.regression import DEMRegressionTask

BANDS = ["B2", "B3", "B4", "B8"]
INORM = ImageNorm(BANDS, 1e-4, [0.1] * 4, [0.05] * 4).to_dict()
ENORM = ElevationNorm(100.0, 900.0).to_dict()
TINY_G = {"base": 8, "depth": 5, "dropout": 0.0}  # pix2pix U-Net, 32 px -> 1 px
TINY_D = {"base": 8, "n_layers": 2}


# tiny convolutions run fastest, and immune to oversubscription, on one thread
pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(b=4, n=32, seed=0):
    """Smooth images and a smooth target depending on them; the top rows are invalid."""
    g = torch.Generator().manual_seed(seed)
    image = F.interpolate(torch.randn(b, 4, 8, 8, generator=g), size=n, mode="bilinear")
    mask = torch.ones(b, 1, n, n, dtype=torch.bool)
    mask[:, :, :3] = False
    target = torch.tanh(0.6 * image[:, :1] - 0.4 * image[:, 3:4])
    target = torch.where(mask, target, 0.0)
    offset = torch.arange(b, dtype=torch.float64) * 10.0
    return {"image": image, "target": target, "mask": mask, "offset": offset,
            "index": torch.arange(b)}  # fmt: skip


class _Repeat(torch.utils.data.Dataset):
    def __init__(self, batch, n):
        self.batch, self.n = batch, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.batch


def _loader(batch, n=1):
    return torch.utils.data.DataLoader(_Repeat(batch, n), batch_size=None)


class _Record(L.Callback):
    def __init__(self, key):
        self.key, self.values = key, []

    def on_train_batch_end(self, trainer, *args):
        self.values.append(float(trainer.callback_metrics[self.key]))


def _fit(task, batch, steps, key, tmp_path=None):
    """Train on one batch for ``steps`` batches (one epoch, then one validation)."""
    rec = _Record(key)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[rec], num_sanity_val_steps=0,
        default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(task, _loader(batch, steps), _loader(batch))
    return trainer, rec.values


def _drop(values):
    """First loss over the best of the last few (robust to one noisy step)."""
    return values[0] / min(values[-5:])


def _check_checkpoint(trainer, task, tmp_path, batch):
    path = tmp_path / f"{task.task_name}.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert raw[TASK_KEY] == task.task_name
    hp = raw["hyper_parameters"]
    assert hp["task"] == task.task_name and hp["chip_size"] == 32 and hp["target"] == "dtm"
    assert hp["image_norm"] == INORM and hp["image_norm"]["bands"] == BANDS
    loaded = load_task(path)
    assert type(loaded) is type(task) and loaded.bands == BANDS
    assert loaded.elevation_norm.to_dict() == task.elevation_norm.to_dict()
    task.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["image"]), task(batch["image"]))


@pytest.mark.parametrize(
    "loss,gradient_weight,ssim_weight",
    [("l1", 0.0, 0.0), ("mse", 0.0, 0.0), ("huber", 0.0, 0.0), ("l1", 1.0, 0.5)],
)
def test_regression_overfits_one_batch(tmp_path, loss, gradient_weight, ssim_weight):
    torch.manual_seed(0)
    batch = _batch()
    task = DEMRegressionTask(INORM, ENORM, base=8, depth=2, lr=1e-2, weight_decay=0.0,
                             loss=loss, gradient_weight=gradient_weight,
                             ssim_weight=ssim_weight, chip_size=32)  # fmt: skip
    trainer, losses = _fit(task, batch, 150, "train_loss", tmp_path)
    assert _drop(losses) >= 10, (losses[0], losses[-5:])
    for key in ("val_mae_m", "val_rmse_m", "val_bias_m", "val_r2", "val_ssim"):
        assert torch.isfinite(trainer.callback_metrics[key])
    if gradient_weight:
        _check_checkpoint(trainer, task, tmp_path, batch)


def test_regression_with_another_generator_and_size_multiple():
    task = DEMRegressionTask(INORM, ENORM, generator="pix2pix", generator_kwargs=TINY_G)
    assert task.size_multiple == 32 and task(_batch()["image"]).shape == (4, 1, 32, 32)
    assert DEMRegressionTask(INORM, ENORM, base=8, depth=3, stem=2).size_multiple == 16


@pytest.mark.parametrize("gan_mode", ["bce", "lsgan"])
def test_pix2pix_overfits_one_batch(tmp_path, gan_mode):
    torch.manual_seed(0)
    batch = _batch()
    task = Pix2PixTask(INORM, ENORM, generator_kwargs=TINY_G, discriminator_kwargs=TINY_D,
                       gan_mode=gan_mode, lr=1e-3, chip_size=32)  # fmt: skip
    trainer, l1 = _fit(task, batch, 200, "train_l1", tmp_path)
    assert _drop(l1) >= 10, (l1[0], l1[-5:])
    assert torch.isfinite(trainer.callback_metrics["val_mae_m"])
    if gan_mode == "lsgan":
        _check_checkpoint(trainer, task, tmp_path, batch)


def _convs(module):
    return [
        m for m in module.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]


def test_channels_last_converts_every_network_and_keeps_the_numbers():
    """on_fit_start puts generator, discriminator and reviser in NHWC; outputs do not change."""
    torch.manual_seed(0)
    task = DRPANTask(INORM, ENORM, generator_kwargs=TINY_G, discriminator_kwargs=TINY_D,
                     reviser_kwargs=TINY_D, chip_size=32).eval()  # fmt: skip
    x = _batch()["image"]
    with torch.no_grad():
        ref = task(x)
    task.on_fit_start()  # channels_last is every task's default
    nets = [task.model, task.discriminator, task.reviser]
    for net in nets:
        assert _convs(net)
        for conv in _convs(net):
            assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = task(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    task.set_channels_last(False)
    w = _convs(task.discriminator)[0].weight
    assert w.is_contiguous() and not task._channels_last
    off = DEMRegressionTask(INORM, ENORM, base=8, depth=3, channels_last=False)
    off.on_fit_start()
    assert all(c.weight.is_contiguous() for c in _convs(off.model))


def test_drpan_overfits_one_batch(tmp_path):
    torch.manual_seed(0)
    batch = _batch()
    task = DRPANTask(INORM, ENORM, generator_kwargs=TINY_G, discriminator_kwargs=TINY_D,
                     reviser_kwargs=TINY_D, lr=1e-3, chip_size=32)  # fmt: skip
    trainer, l1 = _fit(task, batch, 250, "train_l1", tmp_path)
    assert _drop(l1) >= 10, (l1[0], l1[-5:])
    assert torch.isfinite(trainer.callback_metrics["train_region_l1"])
    _check_checkpoint(trainer, task, tmp_path, batch)


def _generator_grads(tmp_path, **weights):
    """Gradients on the generator after one DRPAN training step with only ``weights`` on."""
    torch.manual_seed(0)
    off = {"lambda_gan": 0.0, "lambda_l1": 0.0, "mu_gradient": 0.0, "lambda_reviser": 0.0,
           "lambda_region": 0.0}  # fmt: skip
    task = DRPANTask(INORM, ENORM, generator_kwargs=TINY_G, discriminator_kwargs=TINY_D,
                     reviser_kwargs=TINY_D, chip_size=32, **{**off, **weights})  # fmt: skip
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, _loader(_batch()))
    first = task.model.down[0][0].weight.grad  # the generator's input conv
    total = sum(float(p.grad.abs().sum()) for p in task.model.parameters() if p.grad is not None)
    return (0.0 if first is None else float(first.abs().sum())), total


def test_drpan_reviser_and_region_terms_reach_the_generator(tmp_path):
    # Each term alone, after a real training step: the gradient reaches the first layer.
    for term in ("lambda_reviser", "lambda_region"):
        first, total = _generator_grads(tmp_path, **{term: 1.0})
        assert first > 0 and total > 0, term
    # Control: with every generator term off, no gradient at all (so the test can fail).
    assert _generator_grads(tmp_path) == (0.0, 0.0)


def test_drpan_region_is_the_most_fake_window():
    task = DRPANTask(INORM, ENORM, generator_kwargs=TINY_G, discriminator_kwargs=TINY_D,
                     region_size=0.25)  # fmt: skip

    class Score(torch.nn.Module):  # logits low (fake) in the bottom-right corner only
        def forward(self, x):
            s = torch.ones(x.shape[0], 1, 8, 8)
            s[:, :, 6:, 6:] = -5.0
            return s

    task.discriminator = Score()
    region = task.propose_region(torch.zeros(2, 4, 32, 32), torch.zeros(2, 1, 32, 32))
    assert region.shape == (2, 1, 32, 32) and int(region[0].sum()) == 8 * 8
    assert region[:, :, 24:, 24:].all()  # the 8 x 8 px square over map cells 6-7


def test_metrics_are_metres_over_valid_pixels():
    norm = GlobalShiftNorm(50.0)  # per chip: metres = (z + 1) * 50 + offset
    batch = _batch(b=2, n=16)
    pred_z = batch["target"] + 0.1 * torch.randn_like(batch["target"])
    pred, true = to_metres(norm, pred_z, batch), to_metres(norm, batch["target"], batch)
    p = (pred_z.numpy() + 1) * 50 + batch["offset"].numpy()[:, None, None, None]
    t = (batch["target"].numpy() + 1) * 50 + batch["offset"].numpy()[:, None, None, None]
    np.testing.assert_allclose(pred.numpy(), p, rtol=1e-6, atol=1e-4)
    m = batch["mask"].numpy()
    e = (p - t)[m]
    metrics = MetresMetrics()
    metrics.update(pred, true, batch["mask"])
    got = {k: float(v) for k, v in metrics.compute().items()}
    assert got["mae_m"] == pytest.approx(np.abs(e).mean(), rel=1e-5)
    assert got["rmse_m"] == pytest.approx(np.sqrt((e**2).mean()), rel=1e-5)
    assert got["bias_m"] == pytest.approx(e.mean(), rel=1e-4, abs=1e-6)
    r2 = 1 - (e**2).sum() / ((t[m] - t[m].mean()) ** 2).sum()
    assert got["r2"] == pytest.approx(r2, rel=1e-5)
    assert 0 < got["ssim"] < 1
    with pytest.raises(ValueError):  # per-chip norms need the offsets
        to_metres(norm, pred_z, None)


def test_validation_logs_metres(tmp_path):
    torch.manual_seed(0)
    batch = _batch()
    task = DEMRegressionTask(INORM, ENORM, base=8, depth=2)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    (logged,) = trainer.validate(task, _loader(batch), verbose=False)
    task.eval()
    with torch.no_grad():  # validation fills invalid image pixels first
        z = task(task.clean_batch(batch)["image"])
    e = ((z - batch["target"]) * 400.0)[batch["mask"]]  # metres per unit: (900 - 100) / 2
    assert task.monitor == "val_mae_m"
    assert logged["val_mae_m"] == pytest.approx(float(e.abs().mean()), rel=1e-4)
    assert logged["val_bias_m"] == pytest.approx(float(e.mean()), rel=1e-3, abs=1e-4)
    assert logged["val_rmse_m"] == pytest.approx(float(e.pow(2).mean().sqrt()), rel=1e-4)
    assert {"val_r2", "val_ssim"} <= set(logged)


def test_relative_models_report_relative_metrics_only(tmp_path):
    """A per-chip (relative) model's validation must not use the true chip offset to
    score its prediction: it logs MAE/RMSE after removing each chip's mean error, under
    explicit names, no ``val_mae_m``, and monitors ``val_mae_rel_m``."""
    torch.manual_seed(0)
    batch = _batch()
    task = DEMRegressionTask(INORM, GlobalShiftNorm(50.0).to_dict(), base=8, depth=2)
    assert task.relative and task.monitor == "val_mae_rel_m"
    assert task.configure_optimizers()["lr_scheduler"]["monitor"] == "val_mae_rel_m"
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    (logged,) = trainer.validate(task, _loader(batch), verbose=False)
    assert set(logged) == {"val_mae_rel_m", "val_rmse_rel_m", "val_r2_rel", "val_ssim_rel"}
    task.eval()
    with torch.no_grad():
        err = (task(task.clean_batch(batch)["image"]) - batch["target"]) * 50.0  # offsets cancel
    m = batch["mask"]
    e = torch.cat([err[i][m[i]] - err[i][m[i]].mean() for i in range(len(err))])
    assert logged["val_mae_rel_m"] == pytest.approx(float(e.abs().mean()), rel=1e-4)
    assert logged["val_rmse_rel_m"] == pytest.approx(float(e.pow(2).mean().sqrt()), rel=1e-4)
    # A prediction off by a constant per chip scores perfectly, a wrong relief does not.
    metrics = MetresMetrics(relative=True)
    true = torch.rand(2, 1, 16, 16) * 10
    mask = torch.ones_like(true, dtype=torch.bool)
    metrics.update(true + torch.tensor([3.0, -7.0]).view(2, 1, 1, 1), true, mask)
    assert float(metrics.compute()["mae_rel_m"]) == pytest.approx(0.0, abs=1e-5)
    metrics.update(2 * true, true, mask)
    assert float(metrics.compute()["mae_rel_m"]) > 0.5
    # Refinement is anchored by its initial DSM: absolute despite its per-chip norm.
    from demgen.tasks.refine import RefineTask

    assert RefineTask.anchored and DEMRegressionTask.anchored is False


def test_predict_scene_with_a_pix2pix_task(tmp_path):
    torch.manual_seed(0)
    task = Pix2PixTask(INORM, ENORM, generator_kwargs=TINY_G, discriminator_kwargs=TINY_D,
                       chip_size=32)  # fmt: skip
    rng = np.random.default_rng(0)
    img = rng.integers(500, 2000, size=(4, 64, 64)).astype(np.uint16)
    path = write_raster(tmp_path / "img.tif", img, crs="EPSG:32633",
                        transform=from_origin(500_000, 5_200_000, 10, 10),
                        descriptions=BANDS)  # fmt: skip
    out = predict_scene(task, path, tmp_path / "dem.tif", window=32, precision="32",
                        progress=False)  # fmt: skip
    with rasterio.open(out) as ds:
        dem = ds.read(1)
        assert dem.shape == (64, 64) and ds.tags()["demgen_target"] == "dtm"
    # tanh output: heights inside the training range [100, 900] m
    assert np.isfinite(dem).all() and dem.min() >= 100.0 and dem.max() <= 900.0
