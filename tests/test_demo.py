"""`demgen demo --fast` end to end through `demgen fit`: files, georeferencing, both held-out
scenes reported, the model beating both baselines on the same-relief one; and the baselines'
fit on a chip store's training split."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from demgen.baselines import fit_baselines
from demgen.data.chips import ChipStore
from demgen.data.prepare import PrepareConfig, prepare_rasters
from demgen.data.synth import SceneConfig, generate_world
from demgen.demo import DemoConfig, fit_args, max_time
from demgen.inference.scene import NODATA
from demgen.tasks import load_task


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "demgen", "demo", "--fast", "--out", str(out), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    elapsed = time.time() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout, elapsed


def test_fast_demo_maps_to_fit_overrides(tmp_path):
    args = fit_args(DemoConfig.fast(), tmp_path, progress=False)
    text = " ".join(args)
    assert args[:2] == ["--config", DemoConfig().config] and DemoConfig().config.endswith(
        "configs/demo.yaml"
    )
    assert "--trainer.max_time 00:00:01:00" in text
    assert "--data.init_args.size 256" in text and "--model.init_args.base 16" in text
    assert f"--data.init_args.cache_dir {tmp_path / 'data'}" in text
    assert max_time(7) == "00:00:07:00" and max_time(90.5) == "00:01:30:30"
    # trainer overrides (benchmarks/precision_parity.py trains a fixed number of epochs)
    cfg = DemoConfig(trainer={"max_epochs": 20, "min_epochs": 20})
    text = " ".join(fit_args(cfg, tmp_path, progress=False))
    assert "--trainer.max_epochs 20 --trainer.min_epochs 20" in text


def test_baselines_fit_on_the_store_training_split(tmp_path):
    world = generate_world(tmp_path / "w", 2, SceneConfig(size=96, seed=4, erosion_iterations=3))
    store = prepare_rasters(
        [w / "image.tif" for w in world], [w / "dtm.tif" for w in world], tmp_path / "store",
        PrepareConfig(chip_size=32, block=1, buffer=0.0, min_blocks=2),
    )  # fmt: skip
    mean, lin = fit_baselines(store)
    s = ChipStore(store)
    idx = s.indices("train")
    heights = np.asarray(s.elevation[idx], np.float64)[np.asarray(s.mask[idx], bool)]
    assert mean.mean_m == pytest.approx(heights.mean(), rel=1e-9)  # training pixels only
    assert mean.mean_m != pytest.approx(np.nanmean(np.asarray(s.elevation, np.float64)))
    assert lin.coef is not None and lin.coef.shape == (5,)  # 4 bands + intercept


@pytest.mark.slow
def test_demo_fast_writes_everything_in_time(demo_run):
    out, stdout, elapsed = demo_run
    assert elapsed < 120, f"demo --fast took {elapsed:.0f} s"
    for name in ("prediction.tif", "prediction_alpine.tif", "model.ckpt", "metrics.json",
                 "report.md", "figure.png", "learning_curves.png",
                 "fit/version_0/checkpoints/best.ckpt", "fit/version_0/config.yaml"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    for scene in ("test_scene", "test_scene_alpine"):
        for name in ("image.tif", "dtm.tif", "dsm.tif", "landcover.tif", "scene.json"):
            assert (out / scene / name).exists(), (scene, name)
    assert len(list((out / "data").glob("synth_*/store/manifest.json"))) == 1
    assert f"run folder: {out}" in stdout
    assert not list(out.rglob(".*.tmp*")), "temporary files left behind"


@pytest.mark.slow
def test_demo_predictions_are_georeferenced_metres(demo_run):
    out, _, _ = demo_run
    for pred, scene in (("prediction.tif", "test_scene"), ("prediction_alpine.tif",
                                                           "test_scene_alpine")):  # fmt: skip
        with rasterio.open(out / pred) as p, rasterio.open(out / scene / "dtm.tif") as t:
            assert p.crs == t.crs and p.transform == t.transform and p.shape == t.shape
            assert p.dtypes[0] == "float32" and p.units[0] == "metre"
            values = p.read(1)
        assert (values != NODATA).all()
    with rasterio.open(out / "prediction.tif") as p, rasterio.open(out / "test_scene/dtm.tif") as t:
        pred, truth = p.read(1), t.read(1)
    # Heights are metres on the true scale, not normalized units.
    assert abs(float(np.median(pred)) - float(np.median(truth))) < 0.5 * float(np.ptp(truth))


@pytest.mark.slow
def test_demo_model_beats_both_baselines_and_reports_both_scenes(demo_run):
    out, _, _ = demo_run
    m = json.loads((out / "metrics.json").read_text())
    same, other = m["held_out"]["same_relief"], m["held_out"]["other_relief"]
    assert same["relief"] == m["training"]["relief"] == "hills" and other["relief"] == "alpine"
    model = same["model"]["mae_m"]
    assert model < 0.8 * same["linear_baseline"]["mae_m"]
    assert model < 0.8 * same["mean_baseline"]["mae_m"]
    for s in (same, other):
        assert s["model"]["n_pixels"] == s["linear_baseline"]["n_pixels"]  # same pixels for all
        assert s["model"]["n_pixels"] == s["mean_baseline"]["n_pixels"] > 0
        assert set(s["climate"]) >= {"snow_line_m", "tree_line_m"}
    assert same["climate"] != other["climate"]
    assert m["training"]["checkpoint"] == "best.ckpt" and m["training"]["epochs"] >= 1
    report = (out / "report.md").read_text()
    assert m["readme_table"] in report  # the README's table, verbatim
    assert f"{model:.1f}" in report and "linear regression" in report
    assert report.count("| `hills` seed 1000 |") == report.count("| `alpine` seed 2000 |") == 3


@pytest.mark.slow
def test_demo_checkpoint_carries_normalization(demo_run):
    out, _, _ = demo_run
    task = load_task(out / "model.ckpt")
    assert task.bands == ["B2", "B3", "B4", "B8"]
    assert task.elevation_norm.vmax > task.elevation_norm.vmin
    assert task.hparams.target == "dtm" and task.hparams.chip_size == 128
