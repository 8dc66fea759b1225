"""DEM -> image: relief features in metres, the tasks' contract, training, scene prediction."""

import math

import lightning
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from demgen.data.normalize import ElevationNorm, PercentileImageNorm
from demgen.errors import InputError
from demgen.inference.scene import predict_scene, window_starts
from demgen.io.raster import write_raster
from demgen.tasks.dem2image import Dem2ImageTask, height_center_scale
from demgen.tasks.dem2image_gan import Dem2ImagePix2PixTask
from demgen.tasks.registry import load_task
from demgen.tasks.relief import FEATURES, relief_features

BANDS = ["B2", "B3", "B4", "B8"]
INORM = PercentileImageNorm(BANDS, [200.0] * 4, [3000.0] * 4)
ENORM = ElevationNorm(100.0, 900.0)


def _plane(n=32, px=10.0, gx=0.1, gy=0.0):
    """Heights of a plane rising ``gx`` m/m eastwards and ``gy`` northwards (row 0 north)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    h = 500.0 + gx * x * px - gy * y * px
    return torch.tensor(h, dtype=torch.float32)[None, None]


def _feat(h, px=10.0, **kw):
    return relief_features(h, px, height_mean=500.0, height_std=400.0, **kw)


def test_plane_slope_normal_and_hillshade_by_hand():
    f = _feat(_plane(gx=0.1, gy=0.05), sun_azimuth=90.0, sun_elevation=30.0)
    c = {name: f[0, i, 8:24, 8:24] for i, name in enumerate(FEATURES)}  # away from edges
    g = math.hypot(0.1, 0.05)
    n = 1 / math.sqrt(1 + g * g)
    assert torch.allclose(c["slope"], torch.tensor(math.atan(g) / (math.pi / 2)), atol=1e-5)
    assert torch.allclose(c["normal_x"], torch.tensor(-0.1 * n), atol=1e-5)
    assert torch.allclose(c["normal_y"], torch.tensor(-0.05 * n), atol=1e-5)
    # sun due east at 30 deg: cos i = (sin 30 - p cos 30) n; the plane rises to the east
    cos_i = (0.5 - 0.1 * math.cos(math.radians(30))) * n
    assert torch.allclose(c["hillshade"], torch.tensor(cos_i), atol=1e-5)
    assert torch.allclose(c["local_relief"], torch.tensor(0.0), atol=1e-4)  # a plane
    assert torch.allclose(c["sky_view"], torch.tensor((1 + n) / 2), atol=1e-6)


def test_pixel_size_is_in_metres():
    """The same 10 % slope sampled at 10 m and at 30 m gives the same slope feature."""
    a = _feat(_plane(px=10.0), px=10.0)[0, FEATURES.index("slope"), 8:24, 8:24]
    b = _feat(_plane(px=30.0), px=30.0)[0, FEATURES.index("slope"), 8:24, 8:24]
    assert torch.allclose(a, b, atol=1e-6)
    wrong = _feat(_plane(px=30.0), px=10.0)[0, FEATURES.index("slope"), 8:24, 8:24]
    assert not torch.allclose(a, wrong, atol=1e-2)  # degrees-as-metres would be caught


def test_features_are_translation_equivariant():
    """A crop's features equal the interior of the whole's: windows agree, no seams."""
    rng = np.random.default_rng(0)
    h = torch.tensor(rng.normal(0, 30, (1, 1, 64, 64)).cumsum(-1).cumsum(-2), dtype=torch.float32)
    whole = _feat(h, radius=4)
    crop = _feat(h[..., 16:48, 16:48], radius=4)
    assert torch.allclose(whole[..., 21:43, 21:43], crop[..., 5:27, 5:27], atol=1e-4)


def _task(cls=Dem2ImageTask, **kw):
    kw.setdefault("depth", 2)
    kw.setdefault("base", 8)
    if cls is Dem2ImagePix2PixTask:
        kw.pop("depth"), kw.pop("base")
        kw.setdefault("generator_kwargs", {"depth": 3, "base": 8, "max_width": 16})
    return cls(INORM.to_dict(), ENORM.to_dict(), chip_size=32, pixel_size=10.0, **kw)


def test_spec_declares_metres_in_and_uint16_reflectance_out():
    spec = _task().spec
    assert [(la.name, la.unit) for la in spec.inputs] == [("dem", "metre")]
    (out,) = spec.outputs
    assert (out.name, out.unit, out.dtype, out.bands) == ("image", "reflectance", "uint16",
                                                          tuple(BANDS))  # fmt: skip
    assert not spec.dihedral  # the sun has a direction
    lc = _task(landcover_classes=9).spec
    assert [la.name for la in lc.inputs] == ["dem", "landcover"]
    assert _task().hparams.reflectance_scale == pytest.approx(1e-4)
    assert height_center_scale(ENORM) == (500.0, 400.0)


def test_invalid_dem_pixels_reach_the_network_as_zero_features():
    task = _task(landcover_classes=3)
    h = _plane(n=16)
    valid = torch.ones_like(h, dtype=torch.bool)
    valid[..., 4:6, 4:6] = False
    h_bad = torch.where(valid, h, torch.tensor(float("nan")))
    lc = torch.full_like(h, 2.0)
    x = task.encode({"dem": torch.nan_to_num(h_bad, nan=500.0), "landcover": lc},
                    {"dem": valid, "landcover": valid})  # fmt: skip
    assert x.shape == (1, len(FEATURES) + 3, 16, 16)
    assert torch.isfinite(x).all()
    assert (x[..., 4:6, 4:6] == 0).all()
    assert (x[0, len(FEATURES) + 2][valid[0, 0]] == 1).all()  # one-hot of class 2


def _batch(n=4, size=32, seed=0):
    """A batch whose image is a function of the relief: bright where the hillshade is."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 1, size, size, generator=g).cumsum(-1).cumsum(-2) * 5 + 500
    task = _task()
    feats = task.features(h, torch.ones_like(h, dtype=torch.bool))
    shade = feats[:, FEATURES.index("hillshade") : FEATURES.index("hillshade") + 1]
    stored = 300 + 2000 * shade.repeat(1, 4, 1, 1)
    return {
        "input": ENORM.forward(h),
        "target": INORM.apply(stored),
        "mask": torch.ones(n, 1, size, size, dtype=torch.bool),
        "offset": torch.zeros(n, dtype=torch.float64),
    }


@pytest.mark.parametrize("cls", [Dem2ImageTask, Dem2ImagePix2PixTask])
def test_training_lowers_the_reflectance_l1(cls, tmp_path):
    torch.manual_seed(0)
    task = _task(cls, lr=3e-3 if cls is Dem2ImageTask else 1e-3)
    batch = _batch()
    x, _, mask, true = task.batch_roles(batch)
    with torch.no_grad():
        before = float(task.l1_refl(task(x), true, mask))
    loader = torch.utils.data.DataLoader([batch] * 40, batch_size=None)
    trainer = lightning.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(task, loader, torch.utils.data.DataLoader([batch], batch_size=None))
    assert math.isfinite(float(trainer.callback_metrics["val_psnr_db"]))
    task.eval()
    with torch.no_grad():
        after = float(task.l1_refl(task(x), true, mask))
    assert after < 0.6 * before, (before, after)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_task(ckpt)
    assert type(loaded) is cls and loaded.spec == task.spec
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x), task(x), atol=1e-5)


def _dem_file(tmp_path, n=96, px=10.0, hole=True):
    y, x = np.mgrid[0:n, 0:n]
    h = (500 + 80 * np.sin(x / 9.0) * np.cos(y / 11.0) + 2.0 * x).astype(np.float32)
    if hole:
        h[40:44, 50:53] = np.nan
    return write_raster(tmp_path / "dem.tif", h[None], crs="EPSG:32633",
                        transform=from_origin(500_000, 5_200_000, px, px),
                        descriptions=["dtm"], nodata=-9999.0)  # fmt: skip


def test_scene_prediction_writes_georeferenced_uint16_reflectance(tmp_path):
    torch.manual_seed(0)
    task = _task()
    dem = _dem_file(tmp_path)
    out = predict_scene(task, {"dem": dem}, tmp_path / "img.tif", window=32, precision="32",
                        progress=False)  # fmt: skip
    with rasterio.open(out) as ds, rasterio.open(dem) as src:
        assert ds.count == 4 and ds.dtypes == ("uint16",) * 4 and ds.nodata == 0
        assert ds.descriptions == tuple(BANDS)
        assert ds.crs == src.crs and ds.transform == src.transform
        assert ds.tags()["units"] == "reflectance" and ds.tags()["reflectance_scale"] == "0.0001"
        a = ds.read()
    hole = np.zeros(a.shape[1:], bool)
    hole[40:44, 50:53] = True
    assert (a[:, hole] == 0).all() and (a[:, ~hole] >= 1).all()  # nodata exactly at the hole
    with pytest.raises(InputError, match="tta"):
        predict_scene(task, {"dem": dem}, tmp_path / "t.tif", tta=True, progress=False)


def test_scene_prediction_leaves_no_seams(tmp_path):
    torch.manual_seed(0)
    task = _task()  # a random U-Net: windows disagree unless blended
    dem = _dem_file(tmp_path, n=128, hole=False)

    def jumps(path, stride):
        with rasterio.open(path) as ds:
            a = ds.read().astype(np.float64).mean(0)
        steps = np.abs(np.diff(a, axis=1))
        starts = window_starts(128, 32, stride)
        borders = sorted({c - 1 for s in starts for c in (s, s + 32) if 0 < c < 128})
        others = [c for c in range(steps.shape[1]) if c not in borders]
        return steps[:, borders].mean() / steps[:, others].mean()

    blended = predict_scene(task, dem, tmp_path / "b.tif", window=32, overlap=0.25,
                            precision="32", progress=False)  # fmt: skip
    hard = predict_scene(task, dem, tmp_path / "h.tif", window=32, overlap=0.0, precision="32",
                         progress=False)  # fmt: skip
    assert jumps(blended, 24) <= 1.1
    assert jumps(hard, 32) > 1.3  # the check can fail: hard tiling shows its seams


@pytest.mark.parametrize("recipe", ["dem2image_unet", "dem2image_pix2pix"])
def test_recipe_trains_and_its_checkpoint_loads(recipe, tmp_path, monkeypatch):
    """``demgen fit`` on a shipped recipe (a tiny world), then ``load_task`` on its
    checkpoint: every argument LightningCLI linked must be one the task takes back."""
    from pathlib import Path

    from demgen.training import fit

    config = Path(__file__).resolve().parents[1] / "configs" / "synthesis" / f"{recipe}.yaml"
    monkeypatch.chdir(tmp_path)
    small = ["--model.init_args.generator_kwargs", "{depth: 6, base: 8, max_width: 16}"]
    run = fit(["--config", str(config), "--run_root", str(tmp_path / "runs"),
               "--data.init_args.cache_dir", str(tmp_path / "cache"),
               "--data.init_args.size", "256", "--data.init_args.n_scenes", "2",
               "--data.init_args.chip_size", "64", "--trainer.max_epochs", "1",
               "--trainer.enable_progress_bar", "false",
               *(small if "pix2pix" in recipe else ["--model.init_args.base", "8"])])  # fmt: skip
    task = load_task(run / "checkpoints" / "last.ckpt")
    assert task.task_name == recipe.replace("_unet", "")
    assert task.hparams.image_dtype == "uint16" and task.hparams.pixel_size == pytest.approx(10)
    assert "extras" not in task.hparams and "input_norms" not in task.hparams


def test_predict_cli_takes_the_dem_by_name(tmp_path):
    """``demgen predict CKPT --input dem=DEM.tif -o IMAGE.tif``, and one line for a wrong name."""
    import subprocess
    import sys

    torch.manual_seed(0)
    task = _task()
    trainer = lightning.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False)  # fmt: skip
    trainer.strategy.connect(task)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    dem = _dem_file(tmp_path, n=64)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "demgen", "predict", str(ckpt), *args],
                              capture_output=True, text=True)  # fmt: skip

    ok = cli("--input", f"dem={dem}", "-o", str(tmp_path / "img.tif"), "--precision", "32")
    assert ok.returncode == 0, ok.stderr
    with rasterio.open(tmp_path / "img.tif") as ds:
        assert ds.count == 4 and ds.dtypes[0] == "uint16" and ds.descriptions == tuple(BANDS)
    bad = cli("--input", f"image={dem}", "-o", str(tmp_path / "x.tif"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "dem" in bad.stderr and not (tmp_path / "x.tif").exists()
