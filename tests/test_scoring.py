"""demgen test: a checkpoint scored on a chip-store split beside the two baselines, over the
same valid pixels, in metres (absolute models) or with explicitly relative metrics."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from demgen.baselines import fit_baselines
from demgen.cli import main
from demgen.data.chips import ChipStore
from demgen.data.datamodule import ChipDataModule
from demgen.data.prepare import PrepareConfig, prepare_npz, prepare_rasters
from demgen.data.synth import SceneConfig, generate_scene
from demgen.metrics.dem import error_stats
from demgen.scoring import score_checkpoint
from demgen.tasks import load_task
from demgen.tasks.regression import DEMRegressionTask

pytestmark = pytest.mark.usefixtures("one_thread")
CHIP = 32


def _fit_save(store, path, tmp_path) -> DEMRegressionTask:
    dm = ChipDataModule(str(store), batch_size=4, num_workers=0, augment=False)
    norms = dm.normalization
    task = DEMRegressionTask(norms["image"], norms["elevation"], base=8, depth=2,
                             chip_size=CHIP, pixel_size=dm.pixel_size)  # fmt: skip
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                        num_sanity_val_steps=0, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, dm)
    trainer.save_checkpoint(path)
    return load_task(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("scoring")
    scene = generate_scene(d / "scene", SceneConfig(size=128, seed=7, erosion_iterations=3))
    cfg = PrepareConfig(chip_size=CHIP, normalize="global", block=1, buffer=0.0, min_blocks=2,
                        fractions=(0.5, 0.25, 0.25))  # fmt: skip
    return prepare_rasters([scene / "image.tif"], [scene / "dtm.tif"], d / "store", cfg)


def test_scores_match_a_hand_computation(store, tmp_path):
    torch.manual_seed(0)
    task = _fit_save(store, tmp_path / "m.ckpt", tmp_path)
    r = score_checkpoint(task, store, split="test", progress=False, precision="32")
    s = ChipStore(store)
    idx = s.indices("test")
    assert r["chips"] == idx.size > 0 and not r["relative"] and r["unit"] == "metre"
    # by hand: the model through predict_batch, the baselines from fit_baselines
    mean_bl, lin_bl = fit_baselines(store)
    ref = np.stack([np.where(s.mask[j], s.elevation[j], np.nan) for j in idx]).astype(np.float64)
    img = torch.from_numpy(np.stack([s.image[j] for j in idx]).astype(np.float32))
    valid = torch.from_numpy(np.stack([s.mask[j] for j in idx]))[:, None]
    with torch.no_grad():
        pred = task.eval().predict_batch({"image": img}, {"image": valid})["dtm"][:, 0].numpy()
    by_hand = error_stats(pred.astype(np.float64), ref)
    m = r["methods"]["model"]
    assert m["n_pixels"] == by_hand["n_pixels"] == int(np.isfinite(ref).sum())
    for k in ("mae_m", "rmse_m", "bias_m", "nmad_m"):
        assert m[k] == pytest.approx(by_hand[k], rel=1e-4, abs=1e-3), k
    mean_hand = error_stats(np.full_like(ref, mean_bl.mean_m), ref)
    assert r["methods"]["training_mean"]["mae_m"] == pytest.approx(mean_hand["mae_m"], rel=1e-6)
    assert r["methods"]["training_mean"]["bias_m"] == pytest.approx(mean_hand["bias_m"], rel=1e-6)
    # the chip-level-free MAE: each chip's mean error removed, by hand
    e = pred.astype(np.float64) - ref
    e -= np.nanmean(e, axis=(1, 2), keepdims=True)
    assert m["mae_chip_level_free_m"] == pytest.approx(np.nanmean(np.abs(e)), rel=1e-4)
    assert m["mae_chip_level_free_m"] <= m["mae_m"] + 1e-9
    flat = np.nanmean(np.abs(ref - np.nanmean(ref, axis=(1, 2), keepdims=True)))
    assert r["methods"]["training_mean"]["mae_chip_level_free_m"] == pytest.approx(flat, rel=1e-6)
    lin = np.stack([lin_bl.predict(np.asarray(s.image[j], np.float64)) for j in idx])
    lin_hand = error_stats(lin.astype(np.float64), ref)
    assert r["methods"]["linear_bands"]["rmse_m"] == pytest.approx(lin_hand["rmse_m"], rel=1e-5)
    assert "slope_rmse_deg" in m and r["pixel_size_m"] == [10.0, 10.0]
    # baselines fitted on another store's training split (here: the same store, explicitly)
    again = score_checkpoint(task, store, progress=False, precision="32", baseline_store=store)
    assert again["methods"]["training_mean"] == r["methods"]["training_mean"]
    assert again["baselines_fitted_on"] == str(store)
    every = score_checkpoint(task, store, split="all", progress=False, precision="32")
    assert every["chips"] == len(s) > r["chips"]


def test_cli_writes_strict_json_report_and_figure(store, tmp_path, capsys):
    task_path = tmp_path / "m.ckpt"
    torch.manual_seed(0)
    _fit_save(store, task_path, tmp_path)
    out = tmp_path / "report"
    argv = ["test", str(task_path), str(store), "-o", str(out), "--json", "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    def no_nan(c):
        raise ValueError(c)

    data = json.loads(printed, parse_constant=no_nan)
    assert data["methods"]["model"]["n_pixels"] > 0
    assert json.loads((out / "metrics.json").read_text(), parse_constant=no_nan) == data
    assert "| model (demgen) |" in (out / "report.md").read_text()
    assert (out / "figure.png").stat().st_size > 1000
    # an existing report folder needs --overwrite; a missing split is one line, exit 2
    assert main(argv) == 2
    assert main(["test", str(task_path), str(store), "--split", "val", "-q"]) == 0
    capsys.readouterr()
    assert main(["test", str(task_path), str(tmp_path / "nostore"), "-q"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_relative_store_heights_get_relative_metrics(tmp_path):
    """An .npz store (heights of unknown scale): every method is scored after a per-chip
    shift, and the keys say so."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:CHIP, 0:CHIP]
    dems = np.stack([k * 40 + 2.0 * xx + yy for k in range(8)]).astype(np.float32)
    imgs = np.stack([np.stack([dems[k] / 4, dems[k] / 5, dems[k] / 6]) for k in range(8)])
    imgs = (imgs + rng.normal(0, 1, imgs.shape)).astype(np.float32)
    np.savez(tmp_path / "c.npz", image=imgs, dem=dems)
    store = prepare_npz([tmp_path / "c.npz"], tmp_path / "s",
                        PrepareConfig(chip_size=CHIP, normalize="global",
                                      fractions=(0.5, 0.25, 0.25)),
                        keys=["image", "dem"])  # fmt: skip
    torch.manual_seed(0)
    task = _fit_save(store, tmp_path / "r.ckpt", tmp_path)
    r = score_checkpoint(task, store, progress=False, precision="32")
    assert r["relative"] and r["unit"] == "relative"
    assert "mae_rel_m" in r["methods"]["model"] and "mae_m" not in r["methods"]["model"]
    # the training-mean baseline shifted per chip is the chip's own mean: by hand
    s = ChipStore(store)
    errs = [np.abs(s.elevation[j] - s.elevation[j].mean()) for j in s.indices("test")]
    want = float(np.mean(np.concatenate([e.ravel() for e in errs])))
    assert r["methods"]["training_mean"]["mae_rel_m"] == pytest.approx(want, rel=1e-5)
    assert r["methods"]["training_mean"]["r2_rel"] == pytest.approx(0.0, abs=1e-9)
