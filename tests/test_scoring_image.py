"""demgen test for image outputs (DEM -> image): the model and the two baselines of
demgen.baselines_image scored on the same valid pixels, in reflectance at data range 1."""

from __future__ import annotations

import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch

from demgen.baselines_image import (
    RELIEF_CHANNELS,
    MeanImage,
    ReliefParams,
    fit_image_baselines,
    relief_design,
)
from demgen.cli import main
from demgen.data.chips import ChipStore
from demgen.data.datamodule import ChipDataModule
from demgen.data.synth_datamodule import SynthWorldDataModule
from demgen.io.jsonio import dumps
from demgen.metrics.image import image_metrics
from demgen.scoring import render_report, score_checkpoint
from demgen.tasks import load_task
from demgen.tasks.dem2image import Dem2ImageTask
from demgen.tasks.regression import DEMRegressionTask
from demgen.tasks.relief import FEATURES

pytestmark = pytest.mark.usefixtures("one_thread")
CHIP = 32


def _trainer() -> L.Trainer:
    return L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One synthetic store and a DEM -> image checkpoint trained 3 steps on it."""
    d = tmp_path_factory.mktemp("scoring_image")
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    dm = SynthWorldDataModule(cache_dir=str(d), n_scenes=3, size=128, chip_size=CHIP,
                              inputs=["elevation"], targets=["image"], augment=False,
                              batch_size=8, num_workers=0)  # fmt: skip
    task = Dem2ImageTask(dm.normalization["image"], dm.normalization["elevation"],
                         chip_size=CHIP, pixel_size=dm.pixel_size, depth=2, base=8)  # fmt: skip
    trainer = _trainer()
    trainer.fit(task, dm)
    ckpt = d / "dem2image.ckpt"
    trainer.save_checkpoint(ckpt)
    torch.set_num_threads(n)
    return {"store": dm.store_path, "ckpt": ckpt, "task": load_task(ckpt), "dir": d}


def test_mean_image_is_the_per_band_training_mean(tiny):
    s = ChipStore(tiny["store"])
    mean, lin = fit_image_baselines(tiny["store"], tiny["task"])
    idx = s.indices("train")
    img = s.image[idx].astype(np.float64)  # (N, C, H, W)
    ok = s.mask[idx].astype(bool) & np.isfinite(s.elevation[idx])
    by_hand = np.array([img[:, b][ok].mean() for b in range(img.shape[1])])
    np.testing.assert_allclose(mean.mean, by_hand, rtol=1e-12)
    pred = mean.predict(np.zeros((2, CHIP, CHIP)))
    assert pred.shape == (2, 4, CHIP, CHIP)
    np.testing.assert_array_equal(pred[1, :, 5, 7], by_hand)
    assert mean.landcover_layer is None and lin.coef.shape == (len(RELIEF_CHANNELS) + 1, 4)
    # per class: a class never seen in training gets the overall mean
    m = MeanImage(np.array([1.0, 2.0]), {0: np.array([10.0, 20.0]), 2: np.array([30.0, 40.0])})
    lc = np.array([[0, 2], [5, np.nan]])
    got = m.predict(np.zeros((2, 2)), lc)
    np.testing.assert_array_equal(got[:, 0, 0], [10, 20])
    np.testing.assert_array_equal(got[:, 0, 1], [30, 40])
    np.testing.assert_array_equal(got[:, 1, 0], [1, 2])
    np.testing.assert_array_equal(got[:, 1, 1], [1, 2])


def _copy_store(src, dst):
    shutil.copytree(src, dst)
    return ChipStore(dst)


def test_linear_relief_recovers_an_exact_linear_image_and_class_means(tiny, tmp_path):
    """A store whose image is an exact linear function of the task's relief features (as
    task.features computes them): the regression recovers it; land cover gives class means."""
    task = tiny["task"]
    s = _copy_store(tiny["store"], tmp_path / "lin")
    elev = np.array(s.elevation, np.float32)
    valid = torch.from_numpy(np.array(s.mask, bool))[:, None]
    with torch.no_grad():
        feats = task.features(torch.from_numpy(elev)[:, None], valid).double().numpy()
    x = feats[:, [FEATURES.index(c) for c in RELIEF_CHANNELS]]
    np.testing.assert_allclose(relief_design(elev, ReliefParams.from_task(task)), x, atol=1e-6)
    rng = np.random.default_rng(1)
    w = rng.uniform(-400, 400, size=(len(RELIEF_CHANNELS), 4))
    b = np.array([3000.0, 4000.0, 5000.0, 6000.0])
    image = np.einsum("nkhw,kc->nchw", x, w) + b[None, :, None, None]
    np.save(s.path / s.manifest["arrays"]["image"], image)
    # a land-cover layer: class = chip index mod 3, by halves of the chip
    lc = np.zeros(elev.shape, np.uint8)
    lc[:, :, CHIP // 2 :] = (np.arange(len(s)) % 3)[:, None, None]
    np.save(s.path / "landcover.npy", lc)
    m = dict(s.manifest)
    m["arrays"]["landcover"] = "landcover.npy"
    m["layers"]["landcover"] = {"file": "landcover.npy", "channels": 1, "bands": ["landcover"],
                                "unit": "class", "kind": "class"}  # fmt: skip
    (s.path / "manifest.json").write_text(json.dumps(m))

    mean, lin = fit_image_baselines(s.path, task)
    np.testing.assert_allclose(lin.coef[:-1], w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lin.coef[-1], b, rtol=1e-9)
    test = s.indices("test")
    np.testing.assert_allclose(lin.predict(elev[test]), image[test], rtol=1e-9, atol=1e-6)
    # a land-cover task: per-class means over the training pixels, by hand
    lc_task = Dem2ImageTask(task.hparams.image_norm, task.hparams.elevation_norm,
                            landcover_classes=3, chip_size=CHIP, pixel_size=10.0,
                            depth=2, base=8)  # fmt: skip
    mean_lc, _ = fit_image_baselines(s.path, lc_task)
    assert mean_lc.landcover_layer == "landcover"
    tr = s.indices("train")
    for code in (0, 1, 2):
        sel = lc[tr] == code
        want = [image[tr][:, c][sel].mean() for c in range(4)]
        np.testing.assert_allclose(mean_lc.class_means[code], want, rtol=1e-12)


def test_score_checkpoint_scores_model_and_baselines_in_reflectance(tiny, tmp_path):
    task, store = tiny["task"], tiny["store"]
    fig = tmp_path / "fig.png"
    r = score_checkpoint(task, store, progress=False, precision="32", figure=fig)
    s = ChipStore(store)
    idx = s.indices("test")
    assert r["unit"] == "reflectance" and r["data_range"] == 1.0 and r["chips"] == idx.size
    assert r["reflectance_scale"] == pytest.approx(1e-4) and r["bands"] == s.bands
    assert list(r["methods"]) == ["model", "training_mean_image", "linear_relief"]
    n = {m["valid_px"] for m in r["methods"].values()}
    assert n == {idx.size * CHIP * CHIP}
    for name, m in r["methods"].items():
        for k in ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "mae", "fd_demgen_rand"):
            assert np.isfinite(m[k]), (name, k)
        assert m["ms_ssim"] is None and "ms_ssim_note" in m  # a 32 px wide mosaic
        assert set(m["per_band"]) == set(s.bands)
    # the model by hand, through predict_batch on the stored heights
    elev = torch.from_numpy(np.array(s.elevation[idx], np.float32))[:, None]
    valid = torch.from_numpy(np.array(s.mask[idx], bool))[:, None]
    with torch.no_grad():
        pred = task.eval().predict_batch({"dem": elev}, {"dem": valid})["image"].double().numpy()
    ref = s.image[idx].astype(np.float64) * 1e-4
    rmse = float(np.sqrt(np.mean((pred * 1e-4 - ref) ** 2)))
    assert r["methods"]["model"]["rmse"] == pytest.approx(rmse, rel=1e-4)
    # the mean image by hand, and its PSNR through image_metrics on one chip mosaic
    mean, _ = fit_image_baselines(store, task)
    err = mean.mean[None, :, None, None] * 1e-4 - ref
    assert r["methods"]["training_mean_image"]["rmse"] == pytest.approx(
        float(np.sqrt(np.mean(err**2))), rel=1e-6
    )
    assert fig.stat().st_size > 1000
    report = render_report(r, "m.ckpt")
    assert "| training mean image |" in report and "| linear relief |" in report


def test_a_perfect_model_scores_psnr_inf_and_ssim_1(tiny, monkeypatch):
    import demgen.scoring_image as si

    s = ChipStore(tiny["store"])
    monkeypatch.setattr(si.ChipPredictor, "__call__",
                        lambda self, chips: s.image[chips].astype(np.float64))  # fmt: skip
    r = score_checkpoint(tiny["task"], tiny["store"], progress=False, precision="32")
    m = r["methods"]["model"]
    assert m["psnr_db"] == np.inf and m["rmse"] == 0.0 and m["sam_deg"] == 0.0
    assert m["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert abs(m["fd_demgen_rand"]) < 1e-6
    assert r["methods"]["linear_relief"]["psnr_db"] < np.inf
    data = json.loads(dumps(r))  # strict JSON: inf -> null
    assert data["methods"]["model"]["psnr_db"] is None
    assert "| model | inf |" in render_report(r, "m.ckpt")
    # image_metrics agrees on the same chips
    ref = s.image[s.indices("test")].astype(np.float64) * 1e-4
    assert image_metrics(ref[0], ref[0], data_range=1.0)["psnr_db"] == np.inf


def test_cli_scores_image_and_dem_checkpoints(tiny, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["test", str(tiny["ckpt"]), str(tiny["store"]), "-o", str(out), "--json", "-q"]
    assert main(argv) == 0

    def no_nan(c):
        raise ValueError(c)

    data = json.loads(capsys.readouterr().out, parse_constant=no_nan)
    assert data["unit"] == "reflectance" and set(data["methods"]) == {
        "model", "training_mean_image", "linear_relief"}  # fmt: skip
    assert json.loads((out / "metrics.json").read_text(), parse_constant=no_nan) == data
    assert "| linear relief |" in (out / "report.md").read_text()
    assert (out / "figure.png").stat().st_size > 1000
    assert main(["test", str(tiny["ckpt"]), str(tiny["store"]), "-q"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("model: PSNR ") and " | training mean image: PSNR " in last
    assert " | linear relief: PSNR " in last and last.endswith(" deg")
    # a DEM checkpoint on the same store still goes the height path
    torch.manual_seed(0)
    dm = ChipDataModule(tiny["store"], batch_size=4, num_workers=0, augment=False)
    dem = DEMRegressionTask(dm.normalization["image"], dm.normalization["elevation"], base=8,
                            depth=2, chip_size=CHIP, pixel_size=dm.pixel_size)  # fmt: skip
    trainer = _trainer()
    trainer.fit(dem, dm)
    trainer.save_checkpoint(tmp_path / "dem.ckpt")
    assert main(["test", str(tmp_path / "dem.ckpt"), str(tiny["store"]), "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out, parse_constant=no_nan)
    assert data["unit"] == "metre" and "mae_m" in data["methods"]["training_mean"]
    assert data["methods"]["model"]["n_pixels"] > 0
