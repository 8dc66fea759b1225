"""`demgen demo --fast` end to end: files, georeferencing, and the model beating both baselines."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from demgen.inference.scene import NODATA, load_task


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


@pytest.mark.slow
def test_demo_fast_writes_everything_in_time(demo_run):
    out, stdout, elapsed = demo_run
    assert elapsed < 120, f"demo --fast took {elapsed:.0f} s"
    for name in ("prediction.tif", "model.ckpt", "metrics.json", "report.md", "figure.png",
                 "learning_curves.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    for name in ("image.tif", "dtm.tif", "dsm.tif", "landcover.tif"):
        assert (out / "test_scene" / name).exists()
    assert f"run folder: {out}" in stdout
    assert not list(out.rglob(".*.tmp*")), "temporary files left behind"


@pytest.mark.slow
def test_demo_prediction_is_georeferenced_metres(demo_run):
    out, _, _ = demo_run
    with rasterio.open(out / "prediction.tif") as p, rasterio.open(out / "test_scene/dtm.tif") as t:
        assert p.crs == t.crs and p.transform == t.transform and p.shape == t.shape
        assert p.dtypes[0] == "float32" and p.units[0] == "metre"
        pred, truth = p.read(1), t.read(1)
    assert (pred != NODATA).all()
    # Heights are metres on the true scale, not normalized units.
    assert abs(float(np.median(pred)) - float(np.median(truth))) < 0.5 * float(np.ptp(truth))


@pytest.mark.slow
def test_demo_model_beats_both_baselines(demo_run):
    out, _, _ = demo_run
    m = json.loads((out / "metrics.json").read_text())
    model = m["model"]["mae_m"]
    assert model < 0.8 * m["linear_baseline"]["mae_m"]
    assert model < 0.8 * m["mean_baseline"]["mae_m"]
    assert m["model"]["n_pixels"] == m["linear_baseline"]["n_pixels"]  # same pixels for all
    report = (out / "report.md").read_text()
    assert f"{model:.1f}" in report and "linear regression" in report


@pytest.mark.slow
def test_demo_checkpoint_carries_normalization(demo_run):
    out, _, _ = demo_run
    task = load_task(out / "model.ckpt")
    assert task.bands == ["B2", "B3", "B4", "B8"]
    assert task.elevation_norm.vmax > task.elevation_norm.vmin
    assert task.hparams.target == "dtm"
