"""demgen fit: every shipped config runs one step; quick.yaml end to end; resume reproduces
an uninterrupted run; two-process DDP (gloo) sees disjoint data; errors are one line."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from demgen.cli import main as cli_main
from demgen.data.chips import ChipStore
from demgen.data.prepare import PrepareConfig, prepare_npz, prepare_rasters
from demgen.data.synth import SceneConfig, generate_scene
from demgen.io.raster import read_raster
from demgen.precision import resolve_precision
from demgen.training import fit, seen_chips

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHIPPED = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))
QUICK = str(CONFIGS / "quick.yaml")
COMMON = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _tiny_quick(cache: Path) -> list[str]:
    """quick.yaml on a smaller world (2 scenes of 128 px, 32-px chips) cached in ``cache``."""
    return [
        "--config", QUICK, "--data.init_args.cache_dir", str(cache),
        "--data.init_args.size", "128", "--data.init_args.n_scenes", "2",
        "--data.init_args.chip_size", "32", "--data.init_args.batch_size", "4", *COMMON,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Tiny stores from one small stereo synthetic scene: 256-px chips (the Sat2DEM generator
    needs 2**8) with global normalization, residual DSM/DTM stores with the refinement
    layers, and an .npz import for ImageToDEM."""
    d = tmp_path_factory.mktemp("fitstores")
    scene = generate_scene(d / "scene", SceneConfig(size=320, seed=3, stereo=True))
    image = [scene / "image.tif"]
    # 256-px chips (the Sat2DEM generator needs 2**8) cut from the 320-px scene, imported
    # as .npz: four 4-band chips with global normalization, 3-band ones with global-shift.
    img, _ = read_raster(scene / "image.tif", dtype=np.float32)
    dtm, _ = read_raster(scene / "dtm.tif", dtype=np.float32)
    offs = [(0, 0), (0, 64), (64, 0), (64, 64)]
    chips = np.stack([img[:, r : r + 256, c : c + 256] for r, c in offs])
    dems = np.stack([dtm[0, r : r + 256, c : c + 256] for r, c in offs])
    np.savez(d / "chips4.npz", image=chips, dem=dems)
    np.savez(d / "chips3.npz", image=chips[:, :3], dem=dems)
    out = {
        "sat2dem": prepare_npz([d / "chips4.npz"], d / "sat2dem", PrepareConfig(
            chip_size=256, normalize="global", fractions=(0.5, 0.5, 0.0)), keys=["image", "dem"]),
        "npz": prepare_npz([d / "chips3.npz"], d / "imagetodem", PrepareConfig(
            chip_size=256, normalize="global-shift", fractions=(0.5, 0.5, 0.0)),
            keys=["image", "dem"]),
    }  # fmt: skip
    extras = [scene / n for n in ("initial_dsm.tif", "ortho2.tif", "triangulation_error.tif")]
    small = PrepareConfig(chip_size=64, block=1, buffer=0.0, normalize="residual", min_blocks=2,
                          fractions=(0.6, 0.4, 0.0))  # fmt: skip
    for target in ("dsm", "dtm"):
        out[target] = prepare_rasters(
            image, [scene / f"{target}.tif"], d / f"refine_{target}", small, extras=extras
        )
    for path in out.values():
        assert len(ChipStore(path).indices("val")) > 0
    return {k: str(v) for k, v in out.items()}


def _store_for(config: str, stores: dict[str, str]) -> str:
    if config.startswith("deepdem/"):
        return stores["dsm" if "dsm" in config else "dtm"]
    if config.startswith("image2dem/"):
        return stores["npz"]
    if config.startswith("synthesis/"):  # DEM -> image on a store `demgen prepare` made
        return stores["dtm"]  # from rasters: georeferenced, so the pixel size is linked
    return stores["sat2dem"]


def test_configs_are_generated_and_complete():
    """The recipe matrix is all there and the generated files match make_configs.py."""
    sys.path.insert(0, str(CONFIGS))
    try:
        import make_configs
    finally:
        sys.path.remove(str(CONFIGS))
    generated = make_configs.all_configs()
    assert len([c for c in generated if c.startswith("sat2dem/")]) == 3 * 4 * 2
    for rel in generated:
        assert rel in SHIPPED, f"{rel} not written: run python configs/make_configs.py"
        text = (CONFIGS / rel).read_text()
        assert text.startswith("# ") and "Source:" in text
    assert {"quick.yaml", "deepdem/refine_dsm.yaml", "deepdem/refine_dtm.yaml",
            "image2dem/pix2pix.yaml"} <= set(SHIPPED)  # fmt: skip


def _mark(config: str):
    """The 54M-parameter GAN recipes take tens of seconds a step on 2 CPU cores: slow."""
    gan = config.startswith("sat2dem/") and not config.startswith("sat2dem/unet")
    return pytest.param(config, marks=pytest.mark.slow) if gan else config


def _self_contained(config: str) -> bool:
    """Whether a shipped config makes its own data (SynthWorldDataModule) instead of reading
    a chip store given with --data.store."""
    data = yaml.safe_load((CONFIGS / config).read_text())["data"]
    return data["class_path"].endswith(("SynthWorldDataModule", "SynthTimeSeriesDataModule"))


@pytest.mark.parametrize("config", [_mark(c) for c in SHIPPED])
def test_every_config_runs_one_step(config, stores, tmp_path, monkeypatch):
    args = ["--config", str(CONFIGS / config), "--run_root", str(tmp_path / "runs"), *COMMON,
            "--trainer.fast_dev_run", "true"]  # fmt: skip
    if config == "quick.yaml":
        args = [*_tiny_quick(tmp_path / "cache"), "--run_root", str(tmp_path / "runs"),
                "--trainer.fast_dev_run", "true"]  # fmt: skip
    elif _self_contained(config):  # synthesizes its own world (demo.yaml): a tiny one here
        chip = "128" if "synthesis/dem2image_pix2pix" in config else "64"  # a depth-7 G
        args += ["--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--data.init_args.size", "128" if config.startswith("temporal/") else "256",
                 "--data.init_args.n_scenes", "2", "--data.init_args.chip_size", chip,
                 "--data.init_args.batch_size", "2"]  # fmt: skip
        if config.startswith("temporal/"):  # a time series: three dates
            args += ["--data.init_args.times", "3"]
    else:
        args += ["--data.store", _store_for(config, stores), "--data.batch_size", "2",
                 "--data.init_args.num_workers", "0"]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert fit(args) is None  # fast_dev_run writes no run folder and no checkpoint
    assert not (tmp_path / "runs").exists() and not list(tmp_path.rglob("*.ckpt"))


@pytest.fixture(scope="module")
def quick_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("quickcache")


def test_quick_end_to_end(quick_cache, tmp_path, capsys):
    from demgen.tasks.registry import load_task

    run = fit([*_tiny_quick(quick_cache), "--run_root", str(tmp_path), "--trainer.max_epochs", "2"])
    out = capsys.readouterr().out
    assert run == tmp_path / "quick" / "version_0"
    assert f"checkpoints in {run / 'checkpoints'}" in out
    assert f"precision {resolve_precision('auto')} (" in out  # --precision auto by default
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.csv",
                 "learning_curves.png", "config.yaml"):  # fmt: skip
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_mae_m", "val_rmse_m", "val_bias_m", "train_loss"} <= set(header)
    task = load_task(run / "checkpoints" / "best.ckpt")
    assert task.bands == ["B2", "B3", "B4", "B8"] and task.hparams.chip_size == 32
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    info = ckpt["demgen"]
    assert info["task"] == "demgen.tasks.regression.DEMRegressionTask"
    assert info["bands"] == task.bands and info["chip_size"] == 32
    assert info["normalization"]["elevation"]["strategy"] == "global"
    # a second run of the same config gets the next version folder; --precision forces one
    run2 = fit([*_tiny_quick(quick_cache), "--run_root", str(tmp_path),
                "--trainer.max_epochs", "1", "--precision", "bf16"])  # fmt: skip
    assert run2 == tmp_path / "quick" / "version_1"
    assert "precision bf16-mixed (" in capsys.readouterr().out
    assert "precision: bf16-mixed" in (run2 / "config.yaml").read_text()


def _val_curve(run: Path) -> list[tuple[int, float, float]]:
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_mae_m")]
    return [(int(r["epoch"]), float(r["val_mae_m"]), float(r["val_rmse_m"])) for r in rows]


@pytest.mark.slow
def test_resume_continues_the_same_run(quick_cache, tmp_path):
    base = [*_tiny_quick(quick_cache), "--run_root", str(tmp_path), "--seed_everything", "7",
            "--early_stopping.patience", "100"]  # fmt: skip
    full = fit([*base, "--run_name", "full", "--trainer.max_epochs", "4"])
    half = fit([*base, "--run_name", "split", "--trainer.max_epochs", "2"])
    resumed = fit(
        [*base, "--run_name", "split", "--trainer.max_epochs", "4", "--ckpt_path", "last"]
    )
    assert resumed == half  # same folder, same metrics.csv
    a, b = _val_curve(full), _val_curve(resumed)
    assert [e for e, *_ in a] == [0, 1, 2, 3] == [e for e, *_ in b]
    np.testing.assert_allclose(np.array(a)[:, 1:], np.array(b)[:, 1:], rtol=1e-4)


@pytest.mark.slow
def test_ddp_two_cpu_processes_see_disjoint_chips(quick_cache, tmp_path):
    from demgen.tasks.registry import load_task

    # build the cache in this process first so the two ranks only read it
    cmd = [sys.executable, "-m", "demgen", "fit", *_tiny_quick(quick_cache),
           "--run_root", str(tmp_path), "--trainer.max_epochs", "2",
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
           "--trainer.callbacks+=demgen.training.SeenChips"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DEMGEN_FIT_RUN_DIR", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "quick" / "version_0"
    assert f"checkpoints in {run / 'checkpoints'}" in proc.stdout
    seen = seen_chips(run)
    assert set(seen) == {0, 1}
    rows = {r: np.loadtxt(run / f"seen_chips_rank{r}.csv", delimiter=",", skiprows=1,
                          dtype=np.int64, ndmin=2) for r in (0, 1)}  # fmt: skip
    store = ChipStore(_store_of(run))
    train = set(store.indices("train").tolist())
    for epoch in (0, 1):
        r0 = set(rows[0][rows[0][:, 0] == epoch, 1].tolist())
        r1 = set(rows[1][rows[1][:, 0] == epoch, 1].tolist())
        assert r0 and r1 and not (r0 & r1), f"epoch {epoch}: ranks share chips {r0 & r1}"
        assert r0 | r1 <= train
    task = load_task(run / "checkpoints" / "best.ckpt")
    assert task.hparams.chip_size == 32


def _store_of(run: Path) -> str:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["demgen"]["store"]


def test_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert cli_main(["fit", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("demgen fit: error:") and "nope.yaml" in err and len(err.splitlines()) == 1
    )
    assert cli_main(["fit", "--config", QUICK, "--model.init_args.bogus", "1"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochz: 3\n")
    assert cli_main(["fit", "--config", QUICK, "--config", str(bad)]) == 2
    assert "max_epochz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--trainer.strategy" in out and "--ckpt_path" in out and "runs" in out


def test_store_recipes_link_pixel_size_and_vertical_datum(stores, tmp_path, monkeypatch):
    """A store-based recipe gets the store's pixel size (10 m rasters) and vertical datum
    linked into the task; an ungeoreferenced .npz store links None (no resolution guard)."""
    import json
    import shutil

    from demgen.training import build_cli
    from demgen.training.runs import RUN_DIR_ENV

    # build_cli (unlike fit) leaves the run folder in the environment: restore it afterwards
    monkeypatch.setenv(RUN_DIR_ENV, "unset-after-this-test")
    monkeypatch.delenv(RUN_DIR_ENV)

    store = tmp_path / "store"
    shutil.copytree(stores["dsm"], store)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["vertical_crs"] = "EGM2008 height"
    (store / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    base = ["--run_root", str(tmp_path / "runs"), *COMMON, "--trainer.fast_dev_run", "true",
            "--data.batch_size", "2", "--data.init_args.num_workers", "0"]  # fmt: skip
    cli = build_cli(["--config", str(CONFIGS / "deepdem/refine_dsm.yaml"), *base,
                     "--data.store", str(store)])  # fmt: skip
    assert cli.model.hparams.pixel_size == pytest.approx(10.0)
    assert cli.model.hparams.vertical_crs == "EGM2008 height"
    cli = build_cli(["--config", str(CONFIGS / "image2dem/pix2pix.yaml"), *base,
                     "--data.store", stores["npz"]])  # fmt: skip
    assert cli.model.hparams.pixel_size is None
    assert cli.model.hparams.vertical_crs == "unknown"
    # a relative model (global-shift) is checkpointed and early-stopped on what it logs
    monitor = getattr(cli.model, "monitor", "val_mae_m")
    assert cli.trainer.checkpoint_callback.monitor == monitor
    assert cli.trainer.early_stopping_callback.monitor == monitor


def test_fit_checkpoint_refuses_images_of_another_resolution(quick_cache, tmp_path, capsys):
    """quick.yaml's world at 20 m (the YAML says 10): the checkpoint records the store's
    20 m, and predict refuses a 40 m image with one line and exit 2 (--any-resolution
    predicts anyway)."""
    from rasterio.transform import from_origin

    from demgen.io.raster import write_raster

    run = fit([*_tiny_quick(quick_cache), "--data.init_args.pixel_size", "20.0",
               "--run_name", "q20", "--run_root", str(tmp_path), "--trainer.max_epochs", "1",
               "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"],
              log=None)  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["pixel_size"] == pytest.approx(20.0)
    img = tmp_path / "coarse.tif"
    data = np.random.default_rng(0).integers(100, 3000, (4, 64, 64)).astype(np.uint16)
    write_raster(img, data, crs="EPSG:32633", transform=from_origin(500_000, 5_200_000, 40, 40),
                 descriptions=["B2", "B3", "B4", "B8"])  # fmt: skip
    capsys.readouterr()
    out = tmp_path / "dem.tif"
    assert cli_main(["predict", str(ckpt), str(img), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pixel size 40.00 m" in err and "20 m" in err
    assert not out.exists()
    assert cli_main(["predict", str(ckpt), str(img), "-o", str(out), "-q",
                     "--any-resolution"]) == 0  # fmt: skip
    assert out.is_file()
