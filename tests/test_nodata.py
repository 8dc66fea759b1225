"""Invalid pixels: never NaN into a network, exactly the invalid input pixels are nodata in
predictions, an image without valid pixels is refused, and losses and metrics do not depend
on what invalid pixels hold."""

from __future__ import annotations

import lightning
import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from demgen.cli import main
from demgen.data.chips import ChipDataset, ChipStore, ChipStoreWriter
from demgen.data.normalize import ElevationNorm, ImageNorm, ResidualNorm
from demgen.inference.scene import NODATA, predict_scene
from demgen.io.raster import write_raster
from demgen.tasks.pix2pix import Pix2PixTask
from demgen.tasks.refine import RefineTask
from demgen.tasks.regression import DEMRegressionTask

BANDS = ["B2", "B3", "B4", "B8"]
INORM = ImageNorm(BANDS, 1e-4, [0.1] * 4, [0.05] * 4)
ENORM = ElevationNorm(100.0, 900.0)
TR = from_origin(500_000, 5_200_000, 10, 10)
N, HOLE = 128, np.s_[60:70, 60:70]  # a 10 x 10 px hole in a 128 px scene
#: Beyond this distance (px) from the hole a depth-2 U-Net (receptive field about 45 px)
#: cannot see it: predictions there must equal those of the image without the hole.
FAR = 32

pytestmark = pytest.mark.usefixtures("one_thread")


def _unet() -> DEMRegressionTask:
    torch.manual_seed(0)
    return DEMRegressionTask(INORM.to_dict(), ENORM.to_dict(), base=8, depth=2, chip_size=32)


def _pixels(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:N, 0:N]
    base = 1000 + 600 * np.sin(x / 13.0) * np.cos(y / 17.0)
    return np.stack([base + rng.normal(0, 50, base.shape) for _ in BANDS]).astype(dtype)


def _far_from_hole() -> np.ndarray:
    far = np.ones((N, N), bool)
    far[HOLE[0].start - FAR : HOLE[0].stop + FAR, HOLE[1].start - FAR : HOLE[1].stop + FAR] = 0
    return far


def _hole() -> np.ndarray:
    m = np.zeros((N, N), bool)
    m[HOLE] = True
    return m


def _predict(task, path, out, **kw) -> np.ndarray:
    predict_scene(task, path, out, precision="32", progress=False, **kw)
    with rasterio.open(out) as ds:
        assert ds.nodata == NODATA
        return ds.read()


def _check(pred: np.ndarray, clean: np.ndarray) -> None:
    """No NaN anywhere, nodata exactly at the hole, the far field as without the hole."""
    assert np.isfinite(pred).all()
    np.testing.assert_array_equal(pred[0] == NODATA, _hole())
    far = _far_from_hole()
    np.testing.assert_allclose(pred[0][far], clean[0][far], rtol=1e-5, atol=1e-3)
    # Near the hole the fill changes predictions, as a plausible pixel would: at most 6.1 m
    # here, in a scene of 12.7 m relief (unfilled: 22 m for a 0 DN, 6e36 m for float32 min).
    valid = ~_hole()
    assert np.abs(pred[0][valid] - clean[0][valid]).max() < 0.75 * np.ptp(clean[0])


def test_nan_hole_is_filled_and_only_the_hole_is_nodata(tmp_path):
    img = _pixels(np.float32)
    clean_path = write_raster(tmp_path / "clean.tif", img, crs="EPSG:32633", transform=TR,
                              nodata=np.nan, descriptions=BANDS)  # fmt: skip
    img[:, HOLE[0], HOLE[1]] = np.nan
    holed = write_raster(tmp_path / "holed.tif", img, crs="EPSG:32633", transform=TR,
                         nodata=np.nan, descriptions=BANDS)  # fmt: skip
    task = _unet()
    clean = _predict(task, clean_path, tmp_path / "c.tif", tta=True)
    pred = _predict(task, holed, tmp_path / "p.tif", tta=True)
    _check(pred, clean)  # (before the fill: 65,436 NaN pixels of 65,536 in a 256 px scene)
    assert (pred[1][_hole()] == NODATA).all()  # the TTA band too


@pytest.mark.parametrize(
    "dtype,nodata", [(np.uint16, 0), (np.float32, float(np.finfo(np.float32).min))]
)
def test_numeric_nodata_value_is_invalid(tmp_path, dtype, nodata):
    # float32's lowest value, a common nodata, overflowed the network to inf/NaN unfilled
    img = _pixels(dtype)
    clean_path = write_raster(tmp_path / "clean.tif", img, crs="EPSG:32633", transform=TR,
                              nodata=nodata, descriptions=BANDS)  # fmt: skip
    img[:, HOLE[0], HOLE[1]] = nodata
    holed = write_raster(tmp_path / "holed.tif", img, crs="EPSG:32633", transform=TR,
                         nodata=nodata, descriptions=BANDS)  # fmt: skip
    task = _unet()
    _check(_predict(task, holed, tmp_path / "p.tif"), _predict(task, clean_path, tmp_path / "c"))


def test_internal_mask_band_is_invalid(tmp_path):
    img = _pixels(np.uint16)  # real-looking values under the mask: only the mask tells
    clean_path = write_raster(tmp_path / "clean.tif", img, crs="EPSG:32633", transform=TR,
                              descriptions=BANDS)  # fmt: skip
    masked = tmp_path / "masked.tif"
    profile = dict(driver="GTiff", width=N, height=N, count=4, dtype="uint16",
                   crs="EPSG:32633", transform=TR)  # fmt: skip
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(masked, "w", **profile) as d:
        d.write(img)
        d.descriptions = tuple(BANDS)
        d.write_mask(np.where(_hole(), 0, 255).astype(np.uint8))
    assert not (tmp_path / "masked.tif.msk").exists()  # internal, not a sidecar
    task = _unet()
    _check(_predict(task, masked, tmp_path / "p.tif"), _predict(task, clean_path, tmp_path / "c"))


class _Local(torch.nn.Module):
    """A 3 x 3 receptive field over ortho1 (channels: initial_dsm, then B2 B3 B4 B8)."""

    size_multiple = 1

    def forward(self, x):
        z = 0.5 * x[:, 1:2] - 0.25 * x[:, 4:5]
        return torch.nn.functional.avg_pool2d(z, 3, 1, 1, count_include_pad=False)


def test_refinement_reader_fills_the_image_hole(tmp_path):
    extras = [{"name": "initial_dsm", "layer": "initial_dsm", "kind": "height", "gaps": True}]
    task = RefineTask(INORM.to_dict(), ResidualNorm(5.0, 32).to_dict(), extras=extras,
                      input_norms={"initial_dsm": {"strategy": "residual"},
                                   "ortho1": {"strategy": "image"}},
                      inputs=["initial_dsm", "ortho1"], chip_size=32)  # fmt: skip
    task.model = _Local()
    img = _pixels(np.float32)
    dsm = write_raster(tmp_path / "dsm.tif", np.linspace(200, 300, N * N, dtype=np.float32)
                       .reshape(N, N), crs="EPSG:32633", transform=TR)  # fmt: skip
    clean_path = write_raster(tmp_path / "clean.tif", img, crs="EPSG:32633", transform=TR,
                              nodata=np.nan, descriptions=BANDS)  # fmt: skip
    img[:, HOLE[0], HOLE[1]] = np.nan
    holed = write_raster(tmp_path / "holed.tif", img, crs="EPSG:32633", transform=TR,
                         nodata=np.nan, descriptions=BANDS)  # fmt: skip
    outs = []
    for name, path in (("c", clean_path), ("p", holed)):
        predict_scene(task, {"ortho1": path, "initial_dsm": dsm}, tmp_path / f"{name}.tif",
                      precision="32", progress=False)  # fmt: skip
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            outs.append(ds.read())
    clean, pred = outs
    assert np.isfinite(pred).all()
    np.testing.assert_array_equal(pred[0] == NODATA, _hole())
    near = np.zeros((N, N), bool)  # the hole and the 1 px ring its fill can reach
    near[HOLE[0].start - 1 : HOLE[0].stop + 1, HOLE[1].start - 1 : HOLE[1].stop + 1] = True
    np.testing.assert_allclose(pred[0][~near], clean[0][~near], rtol=1e-6, atol=1e-3)


def test_image_without_valid_pixels_is_refused(tmp_path):
    path = write_raster(tmp_path / "empty.tif", np.zeros((4, 40, 40), np.uint16),
                        crs="EPSG:32633", transform=TR, nodata=0, descriptions=BANDS)  # fmt: skip
    task = _unet()
    ckpt = tmp_path / "m.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "pytorch-lightning_version": lightning.__version__}, ckpt)  # fmt: skip
    out = tmp_path / "dem.tif"
    assert main(["predict", str(ckpt), str(path), "-o", str(out), "-q"]) == 2
    assert not out.exists() and not list(tmp_path.glob(".*"))  # no output, no leftover


# --------------------------------------------------------------------------- training


def _chip_batch(fill: float, b: int = 2, n: int = 32) -> dict[str, torch.Tensor]:
    """A normalized batch whose invalid pixels (a corner block) hold ``fill`` everywhere."""
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.interpolate(torch.randn(b, 4, 8, 8, generator=g), size=n,
                                            mode="bilinear")  # fmt: skip
    target = torch.tanh(0.6 * image[:, :1] - 0.4 * image[:, 3:4])
    mask = torch.ones(b, 1, n, n, dtype=torch.bool)
    mask[:, :, :10, :12] = False
    image = torch.where(mask, image, fill)
    target = torch.where(mask, target, fill)
    return {"image": image, "target": target, "mask": mask,
            "offset": torch.zeros(b, dtype=torch.float64), "index": torch.arange(b)}  # fmt: skip


class _Loss(L.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, *args):
        self.values.append(float(trainer.callback_metrics["train_loss"]))


def _one_step(make_task, batch, tmp_path) -> dict[str, float]:
    """Train loss of one step (no update before it) and validation metrics after it."""
    torch.manual_seed(0)
    task = make_task()
    rec = _Loss()
    loader = torch.utils.data.DataLoader([batch], batch_size=None)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec],
                        num_sanity_val_steps=0, default_root_dir=tmp_path,
                        accelerator="cpu")  # fmt: skip
    trainer.fit(task, loader, loader)
    out = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    return {"train_loss": rec.values[0], **out}


@pytest.mark.parametrize(
    "make_task",
    [
        lambda: DEMRegressionTask(
            INORM.to_dict(), ENORM.to_dict(), base=8, depth=2, gradient_weight=1.0, ssim_weight=0.5
        ),  # fmt: skip
        lambda: Pix2PixTask(
            INORM.to_dict(),
            ENORM.to_dict(),
            generator_kwargs={"base": 8, "depth": 5, "dropout": 0.0},
            discriminator_kwargs={"base": 8, "n_layers": 2},
        ),  # fmt: skip
    ],
    ids=["regression", "pix2pix"],
)
def test_invalid_pixel_values_change_neither_loss_nor_metrics(make_task, tmp_path):
    runs = [_one_step(make_task, _chip_batch(v), tmp_path) for v in (np.nan, 0.0, 1e6)]
    assert {"train_loss", "val_mae_m", "val_rmse_m", "val_ssim"} <= set(runs[0])
    for k, v in runs[0].items():
        assert np.isfinite(v), k
        for other in runs[1:]:
            assert other[k] == pytest.approx(v, rel=1e-6, abs=1e-7), k


def test_chip_dataset_never_serves_nan(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.uniform(500, 1500, (4, 16, 16)).astype(np.float32)
    mask = np.ones((16, 16), bool)
    mask[:3] = False
    img[:, :3] = np.nan  # kept by --max-invalid: NaN image pixels under an invalid mask
    img[0, 5, 5] = np.inf  # and a stray non-finite value in a "valid" pixel
    with ChipStoreWriter(tmp_path / "s", chip_size=16, bands=BANDS, image_dtype=np.float32) as w:
        w.add(img, np.full((16, 16), 300.0, np.float32), mask, {"scene": 0})
        w.commit({"normalization": {"image": INORM.to_dict(), "elevation": ENORM.to_dict()},
                  "splits": {"train": [0]}, "chip_size": 16})  # fmt: skip
    item = ChipDataset(ChipStore(tmp_path / "s"), "train")[0]
    assert torch.isfinite(item["image"]).all() and torch.isfinite(item["target"]).all()
    assert (item["image"][:, :3] == 0).all() and item["image"][0, 5, 5] == 0  # the fill
    assert (item["image"][:, 3:5] != 0).all()  # valid pixels untouched
