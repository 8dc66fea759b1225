"""Whole-scene sampling of diffusion checkpoints (demgen.inference.sampling): noise from pixel
coordinates, no seams at window borders, bit-for-bit reproducible with --seed, N samples
written as their mean and per-pixel spread, nodata kept, and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from demgen.data.normalize import ElevationNorm, PercentileImageNorm
from demgen.errors import InputError
from demgen.inference.sampling import pixel_noise, sample_scene, std_file
from demgen.inference.scene import predict_scene, window_starts
from demgen.io.raster import write_raster
from demgen.tasks.diffusion_tasks import Image2DemDiffusionTask

BANDS = ["B2", "B3", "B4", "B8"]
INORM = PercentileImageNorm(BANDS, [200.0] * 4, [3000.0] * 4)
ENORM = ElevationNorm(100.0, 900.0)
TINY = {"base_channels": 8, "channel_mults": [1, 2], "sample_steps": 3, "val_steps": 0}

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(seed: int = 0) -> Image2DemDiffusionTask:
    """A tiny image -> DEM diffusion task whose zero-initialised output layers are drawn at
    random, so that windows disagree (an untrained denoiser outputs 0 everywhere)."""
    torch.manual_seed(seed)
    task = Image2DemDiffusionTask(INORM.to_dict(), ENORM.to_dict(), diffusion=TINY,
                                  chip_size=16, pixel_size=10.0)  # fmt: skip
    for net in (task.model, task.denoiser):
        for name, p in net.named_parameters():
            if name.startswith("conv_out") or ".conv2." in name or name.endswith("proj.weight"):
                torch.nn.init.normal_(p, std=0.2)
    return task.eval()


def _image(tmp_path, n=64, hole=False):
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    bands = [1000 + 600 * np.sin(x / (5 + k)) * np.cos(y / (7 + k)) + 10 * x for k in range(4)]
    a = np.stack(bands).astype(np.float32)
    if hole:
        a[:, 20:24, 30:33] = np.nan
    return write_raster(tmp_path / "image.tif", a, crs="EPSG:32633",
                        transform=from_origin(500_000, 5_200_000, 10, 10), descriptions=BANDS,
                        nodata=-9999.0)  # fmt: skip


def test_pixel_noise_is_a_function_of_the_pixel():
    full = pixel_noise(7, (0, 0), 2, 40, 50)
    crop = pixel_noise(7, (0, 0), 2, 16, 12, row0=9, col0=30)
    np.testing.assert_array_equal(full[:, 9:25, 30:42], crop)  # same pixel, same noise
    assert abs(full.mean()) < 0.05 and abs(full.std() - 1.0) < 0.05
    assert not np.array_equal(full, pixel_noise(8, (0, 0), 2, 40, 50))  # another seed
    assert not np.array_equal(full, pixel_noise(7, (0, 1), 2, 40, 50))  # another sample
    assert abs(np.corrcoef(full[0].ravel(), full[1].ravel())[0, 1]) < 0.05  # bands differ
    # normal: about 68 % and 95 % within 1 and 2
    many = pixel_noise(1, (0, 0), 1, 200, 200)
    assert abs((np.abs(many) < 1).mean() - 0.6827) < 0.01
    assert abs((np.abs(many) < 2).mean() - 0.9545) < 0.01


def _disagreeing(task):
    """An exact denoiser of a target every window sees differently: the normalized first band
    plus 0.5 x the window's mean of it (windows disagree by their means, as a network's
    windows disagree by what they see), so hard tiling leaves a step at every border."""
    sched = task.noise_schedule

    def denoise(x, t, cond, guidance=None, attrs=None):
        band = cond[:, :1]
        x0 = band + 0.5 * band.mean(dim=(2, 3), keepdim=True)
        alpha, sigma = sched.alpha_sigma(int(t), x)
        return alpha * (x - alpha * x0) / sigma - sigma * x0

    task.denoise = denoise
    return task


def test_scene_sampling_leaves_no_seams(tmp_path):
    task = _disagreeing(_task())
    img = _image(tmp_path, n=96)

    def jumps(path, stride):
        with rasterio.open(path) as ds:
            a = ds.read(1).astype(np.float64)
        steps = np.abs(np.diff(a, axis=1))
        starts = window_starts(96, 16, stride)
        borders = sorted({c - 1 for s in starts for c in (s, s + 16) if 0 < c < 96})
        others = [c for c in range(steps.shape[1]) if c not in borders]
        return steps[:, borders].mean() / steps[:, others].mean()

    blended = sample_scene(task, img, tmp_path / "b.tif", window=16, overlap=0.5,
                           precision="32", progress=False)  # fmt: skip
    hard = sample_scene(task, img, tmp_path / "h.tif", window=16, overlap=0.0, precision="32",
                        progress=False)  # fmt: skip
    assert jumps(blended, 8) <= 1.1
    assert jumps(hard, 16) > 1.3  # the check can fail: unblended windows show their seams


def test_seed_reproduces_bit_for_bit_and_samples_give_mean_and_spread(tmp_path):
    task = _task()
    img = _image(tmp_path, n=40, hole=True)
    kw = {"window": 24, "precision": "32", "progress": False}
    a = predict_scene(task, img, tmp_path / "a.tif", seed=3, **kw)
    b = predict_scene(task, img, tmp_path / "b.tif", seed=3, **kw)
    c = predict_scene(task, img, tmp_path / "c.tif", seed=4, **kw)
    two = predict_scene(task, img, tmp_path / "two.tif", seed=3, samples=2, **kw)
    read = {}
    for name, path in (("a", a), ("b", b), ("c", c), ("two", two), ("std", std_file(two))):
        with rasterio.open(path) as ds:
            read[name] = ds.read(1)
            if name == "std":
                assert ds.descriptions == ("dtm_std",) and ds.units == ("metre",)
            else:
                assert ds.descriptions == ("dtm",) and ds.tags()["demgen_sampler"] == "ddim"
                assert ds.crs.to_epsg() == 32633 and ds.transform.a == 10
    assert np.array_equal(read["a"], read["b"])  # same seed: the same bytes
    hole = np.zeros((40, 40), bool)
    hole[20:24, 30:33] = True
    assert not np.allclose(read["a"][~hole], read["c"][~hole])  # another seed: another sample
    assert not std_file(a).exists()  # one sample: no spread file
    for k in ("a", "two", "std"):
        assert (read[k][hole] == -9999).all() and (read[k][~hole] != -9999).all()
    # two samples a, b, the first being seed 3's own: the mean is (a + b) / 2 and the
    # sample std |a - b| / sqrt(2) = sqrt(2) |a - mean|
    np.testing.assert_allclose(np.sqrt(2) * np.abs(read["a"] - read["two"])[~hole],
                               read["std"][~hole], rtol=1e-4, atol=1e-3)  # fmt: skip
    assert read["std"][~hole].mean() > 1.0  # metres: the samples do differ


def test_refusals_are_one_line(tmp_path):
    task = _task()
    img = _image(tmp_path, n=16)
    with pytest.raises(InputError, match="tta"):
        predict_scene(task, img, tmp_path / "t.tif", tta=True, progress=False)
    with pytest.raises(InputError, match="num_inference_steps"):
        sample_scene(task, img, tmp_path / "s.tif", steps=5000, progress=False)
    from demgen.export import export_model

    with pytest.raises(InputError, match="diffusion"):
        export_model(task, tmp_path / "m.pt")


def test_predict_cli_samples_a_diffusion_checkpoint(tmp_path):
    import lightning

    task = _task()
    trainer = lightning.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False)  # fmt: skip
    trainer.strategy.connect(task)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    img = _image(tmp_path, n=24)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "demgen", "predict", str(ckpt), str(img),
                               "--precision", "32", "-q", *args],
                              capture_output=True, text=True)  # fmt: skip

    ok = cli("-o", str(tmp_path / "dem.tif"), "--samples", "2", "--seed", "5", "--steps", "2")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "dem.tif").is_file() and (tmp_path / "dem_std.tif").is_file()
    for args, says in ((["--steps", "99999"], "num_inference_steps"),
                       (["--attribute", "snow=0.8"], "unknown attributes"),
                       (["--attribute", "snow"], "NAME=VALUE")):  # fmt: skip
        bad = cli("-o", str(tmp_path / "x.tif"), *args)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert says in bad.stderr and not (tmp_path / "x.tif").exists()
