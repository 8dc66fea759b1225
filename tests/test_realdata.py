"""The real samples in ../shared/realdata (skipped when that folder is absent)."""

from pathlib import Path

import numpy as np
import pytest

from demgen.data.chips import ChipDataset, ChipStore
from demgen.data.prepare import PrepareConfig, prepare_npz, prepare_rasters

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realdata is absent")


def check_splits(st):
    sp = st.manifest["splits"]
    parts = [set(sp[k]) for k in ("train", "val", "test", "excluded")]
    assert sum(map(len, parts)) == len(st) == len(set().union(*parts))
    assert sp["train"] and sp["val"] and sp["test"]


def test_landsat_per_band_scene_with_srtm(tmp_path):
    bands = sorted(REAL.glob("LT52240631988227CUB02_B*.TIF"))
    cfg = PrepareConfig(chip_size=32, bands=["B3", "B2", "B1"])
    st = ChipStore(
        prepare_rasters(bands, [REAL / "amazon_landsat5_srtm_dem.tif"], tmp_path / "l", cfg)
    )
    assert st.bands == ["B3", "B2", "B1"] and st.image.dtype == np.uint8
    assert st.manifest["crs"] == "EPSG:32622"
    assert len(st) == 72
    h = st.elevation[:][st.mask[:]]
    assert h.min() >= 60 and h.max() <= 200
    check_splits(st)
    s = ChipDataset(st, "train")[0]
    assert s["image"].shape == (3, 32, 32)


def test_sentinel2_12band_epsg4326(tmp_path):
    cfg = PrepareConfig(chip_size=32, bands=["B4", "B3", "B2", "B8"], normalize="residual")
    st = ChipStore(
        prepare_rasters(
            [REAL / "amazon_s2_l2a_12band.tif"],
            [REAL / "amazon_s2_srtm_dem.tif"],
            tmp_path / "s",
            cfg,
        )
    )
    assert st.bands == ["B4", "B3", "B2", "B8"] and st.manifest["crs"] == "EPSG:4326"
    assert st.manifest["normalization"]["elevation"]["gsf"] > 0
    h = st.elevation[:][st.mask[:]]
    assert h.min() >= 0 and h.max() <= 65
    check_splits(st)


def test_imagetodem_npz_import(tmp_path):
    files = [REAL / "imagetodem" / "set_a.npz", REAL / "imagetodem" / "set_b.npz"]
    st = ChipStore(prepare_npz(files, tmp_path / "n", PrepareConfig()))
    assert len(st) == 26 and st.image.shape == (26, 3, 256, 256)
    assert st.manifest["z_unit"] == "relative" and st.manifest["crs"] is None
    assert st.chips[12]["file"].endswith("set_b.npz") and st.chips[12]["index"] == 2
    with np.load(files[1]) as z:
        np.testing.assert_array_equal(st.elevation[12], z["dem"][2].astype(np.float32))
        np.testing.assert_array_equal(st.image[12], z["rgb"][2].transpose(2, 0, 1))
    check_splits(st)


def test_dem2image_landsat_end_to_end(tmp_path, monkeypatch, one_thread):
    """SRTM heights -> Landsat 5 bands: prepare, a one-epoch `demgen fit` of the store recipe
    (a small U-Net), the checkpoint loaded back, `demgen test`'s scorer beside both baselines."""
    from demgen.scoring import score_checkpoint
    from demgen.tasks.registry import load_task
    from demgen.training import fit

    names = ["B1", "B2", "B3", "B4", "B5", "B7"]
    bands = [REAL / f"LT52240631988227CUB02_{b}.TIF" for b in names]
    cfg = PrepareConfig(chip_size=64, bands=names, buffer=0.0)  # 4 x 4 chips: no room for one
    store = prepare_rasters(bands, [REAL / "amazon_landsat5_srtm_dem.tif"], tmp_path / "l", cfg)
    st = ChipStore(store)
    assert len(st) == 16 and st.bands == names
    check_splits(st)
    s = ChipDataset(st, "train", inputs=["elevation"], targets=["image"])[0]
    assert s["input"].shape == (1, 64, 64) and s["target"].shape == (6, 64, 64)

    config = Path(__file__).resolve().parents[1] / "configs/synthesis/dem2image_unet_store.yaml"
    monkeypatch.chdir(tmp_path)
    run = fit(["--config", str(config), "--data.store", str(store),
               "--run_root", str(tmp_path / "runs"), "--trainer.max_epochs", "1",
               "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
               "false", "--model.init_args.base", "8", "--model.init_args.depth", "2",
               "--model.init_args.sun_azimuth", "62.0"])  # fmt: skip
    task = load_task(run / "checkpoints" / "best.ckpt")
    hp = task.hparams
    assert task.bands == names and hp.image_dtype == "uint8" and hp.chip_size == 64
    assert hp.pixel_size == pytest.approx(30.0) and hp.sun_azimuth == 62.0

    r = score_checkpoint(task, store, split="test", progress=False)
    assert r["chips"] == len(st.indices("test")) and r["unit"] == "reflectance"
    assert r["reflectance_scale"] == pytest.approx(1 / 255)
    assert set(r["methods"]) == {"model", "training_mean_image", "linear_relief"}
    px = {m["valid_px"] for m in r["methods"].values()}
    assert px == {r["chips"] * 64 * 64}  # every method on the same pixels
    for m in r["methods"].values():
        assert np.isfinite(m["psnr_db"]) and m["psnr_db"] > 0 and np.isfinite(m["ssim"])
