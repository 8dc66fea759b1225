"""Spatio-temporal synthesis (TemporalTask: day-0 image + building mask at t -> image at t) and
building segmentation (SegmentTask), on hand-made batches of the time-pair format."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader, Dataset

from demgen.inference.scene import predict_scene
from demgen.io.raster import write_raster
from demgen.tasks import load_task, task_class
from demgen.tasks.segment import SegmentTask
from demgen.tasks.temporal import DEFAULT_GAP_DAYS, TemporalTask

pytestmark = pytest.mark.usefixtures("one_thread")

BANDS = ["B2", "B3", "B4", "B8"]
LO, HI = 500.0, 3000.0
NORM = {"strategy": "percentile", "bands": BANDS, "lo": [LO] * 4, "hi": [HI] * 4,
        "p_lo": 2.0, "p_hi": 98.0}  # fmt: skip
#: the fixed roof colour new buildings are painted with (stored units)
ROOF = torch.tensor([2600.0, 2500.0, 2400.0, 2000.0]).view(1, 4, 1, 1)
TINY = {"pix2pix": {"depth": 3, "base": 8, "dropout": 0.0},
        "attention_unet": {"depth": 3, "base": 8}}  # fmt: skip
TINY_D = {"base": 8, "n_layers": 2}


def _z(stored: torch.Tensor) -> torch.Tensor:
    return (stored - LO) / (HI - LO)


def pair_batch(n: int = 4, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A time-pair batch: a smooth day-0 image; at t the same image with 1-2 new buildings
    painted ROOF; a corner of every chip invalid (clouds)."""
    g = torch.Generator().manual_seed(seed)
    base = 800 + 1200 * torch.rand(n, 1, size // 4, size // 4, generator=g)
    base = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear")
    img0 = base * torch.tensor([1.0, 1.1, 1.2, 1.6]).view(1, 4, 1, 1)
    m0, mt = torch.zeros(n, 1, size, size), torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(1 + i % 2):
            r, c = (int(v) for v in torch.randint(0, size - 8, (2,), generator=g))
            mt[i, :, r : r + 6, c : c + 6] = 1
    imgt = torch.where(mt > 0, ROOF, img0)
    mask = torch.ones(n, 1, size, size, dtype=torch.bool)
    mask[:, :, :3, :3] = False
    return {"image_t0": _z(img0), "target": _z(imgt), "mask_t0": m0, "mask_t": mt,
            "mask": mask, "changed": (mt > 0) & ~(m0 > 0) & mask,
            "gap_days": torch.tensor([90.0, 180.0, 270.0, 360.0][:n])}  # fmt: skip


class Repeat(Dataset):
    """The items of one batch, ``steps`` batches' worth."""

    def __init__(self, batch: dict[str, torch.Tensor], steps: int) -> None:
        self.batch, self.n = batch, len(batch["mask"])
        self.length = self.n * steps

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i % self.n] for k, v in self.batch.items()}


def _trainer(tmp_path=None) -> L.Trainer:
    """One epoch (the Repeat dataset sets the steps), then validation."""
    return L.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0,
                     default_root_dir=tmp_path)  # fmt: skip


def _fit(task, batch, steps, tmp_path=None, val=None) -> L.Trainer:
    trainer = _trainer(tmp_path)
    n = len(batch["mask"])
    trainer.fit(task, DataLoader(Repeat(batch, steps), batch_size=n),
                DataLoader(Repeat(val or batch, 1), batch_size=n))  # fmt: skip
    return trainer


def _temporal(generator="pix2pix", **kw) -> TemporalTask:
    kw = {"generator_kwargs": TINY[generator], "discriminator_kwargs": TINY_D,
          "chip_size": 32, "channels_last": False, **kw}  # fmt: skip
    return TemporalTask(NORM, None, generator=generator, **kw)


def _l1(task: TemporalTask, batch) -> float:
    was = task.training
    task.eval()
    with torch.no_grad():
        r = task.batch_roles(batch)
        v = float(task.l1_refl(task(r["x"]), task.reflectance(r["target"]), r["mask"]))
    task.train(was)
    return v


# ------------------------------------------------------------------ temporal: the contract
def test_spec_layers_and_units():
    task = _temporal()
    spec = task.spec
    assert spec.input_names == ["image_t0", "mask_t"] and spec.output_names == ["image"]
    img0, mask = spec.inputs
    assert (img0.unit, img0.bands, img0.channels) == ("reflectance", tuple(BANDS), 4)
    assert (mask.unit, mask.channels, mask.gaps) == ("class", 1, True)
    out = spec.outputs[0]
    assert (out.unit, out.dtype, out.bands) == ("reflectance", "uint16", tuple(BANDS))
    assert spec.dihedral and spec.window == 64 and spec.window_multiple == 8
    assert task.in_channels == 5 and _temporal(use_gap=True).in_channels == 6
    assert task.hparams.reflectance_scale == pytest.approx(1e-4)
    assert task.hparams.lambda_l1 == 100.0 and task.monitor == "val_l1_refl"
    assert _temporal(image_dtype="uint8").spec.outputs[0].dtype == "uint8"
    assert task_class("temporal") is TemporalTask and task_class("segment") is SegmentTask
    with pytest.raises(ValueError, match="generator"):
        TemporalTask(NORM, generator="unet")


def test_encode_decode_round_trip():
    task = _temporal("attention_unet", use_gap=True, predict_gap_days=120.0).eval()
    g = torch.Generator().manual_seed(1)
    img = 400 + 3000 * torch.rand(2, 4, 16, 16, generator=g)
    mask = (torch.rand(2, 1, 16, 16, generator=g) > 0.7).float()
    valid = {"image_t0": torch.ones(2, 1, 16, 16, dtype=torch.bool),
             "mask_t": torch.ones(2, 1, 16, 16, dtype=torch.bool)}  # fmt: skip
    valid["image_t0"][:, :, 0, 0] = False
    valid["mask_t"][:, :, 1, 1] = False
    mask[:, :, 1, 1] = 1.0  # an invalid mask pixel counts as no building
    x = task.encode({"image_t0": img, "mask_t": mask}, valid)
    assert x.shape == (2, 6, 16, 16) and torch.isfinite(x).all()
    assert float(x[0, 0, 0, 0]) == 0.5  # the percentile fill where the image is invalid
    assert float(x[0, 4, 1, 1]) == 0.0
    assert torch.allclose(x[:, 5], torch.full((2, 16, 16), 120.0 / 365.0))
    gaps = {"image_t0": img, "mask_t": mask, "gap_days": torch.tensor([30.0, 730.0])}
    x2 = task.encode(gaps, valid)  # a caller that knows each pair's gap gives it
    assert float(x2[0, 5, 0, 0]) == pytest.approx(30 / 365) and float(x2[1, 5, 3, 3]) == 2.0
    # decode inverts the image normalization exactly (clamped at 0)
    out = task.decode(x[:, :4], {}, {})["image"]
    ok = valid["image_t0"].expand_as(img)
    torch.testing.assert_close(out[ok], img[ok], rtol=1e-5, atol=1e-2)
    assert float(task.decode(torch.full((1, 4, 2, 2), -5.0), {}, {})["image"].min()) == 0.0
    assert task.fill_values("mask_t") == (0.0,)
    assert task.fill_values("image_t0") == pytest.approx([(LO + HI) / 2] * 4)
    # without predict_gap_days: 365 until a fit records the training median
    assert _temporal(use_gap=True).prediction_gap_days == DEFAULT_GAP_DAYS
    desc = task.export_description()
    assert [i["layer"] for i in desc["inputs"]] == ["image_t0"] * 4 + ["mask_t", "gap_days"]


# ------------------------------------------------------------------ temporal: training
@pytest.mark.parametrize("generator", ["pix2pix", "attention_unet"])
def test_training_lowers_the_l1(generator, tmp_path):
    torch.manual_seed(0)
    batch = pair_batch()
    task = _temporal(generator, lr=2e-3)
    before = _l1(task, batch)
    trainer = _fit(task, batch, 40, tmp_path)
    after = _l1(task, batch)
    assert after < 0.75 * before, (before, after)
    logged = trainer.callback_metrics
    for key in ("val_l1_refl", "val_psnr_db", "val_l1_changed_refl", "val_l1_copy_refl",
                "train_d_loss", "train_adv"):  # fmt: skip
        assert key in logged and torch.isfinite(logged[key]), key
    # the copy baseline: day 0 differs from t only on the new buildings
    assert float(logged["val_l1_copy_refl"]) < float(logged["val_l1_copy_changed_refl"])


def test_lambda_gan_zero_is_pure_l1_and_leaves_d_alone():
    torch.manual_seed(0)
    batch = pair_batch(n=2, size=16)
    task = _temporal(lambda_gan=0.0, generator_kwargs={"depth": 2, "base": 8, "dropout": 0.0})
    d0 = [p.detach().clone() for p in task.discriminator.parameters()]
    g0 = [p.detach().clone() for p in task.model.parameters()]
    _fit(task, batch, 3)
    d1, g1 = list(task.discriminator.parameters()), list(task.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(d0, d1, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))


def test_checkpoint_round_trip_and_prediction(tmp_path):
    """Save as demgen fit does, load by name (the training median gap comes back), then
    predict a two-window scene from a uint16 4-band day-0 image and a uint8 mask."""
    torch.manual_seed(0)
    batch = pair_batch(n=4, size=16)
    task = _temporal("attention_unet", use_gap=True, pixel_size=10.0,
                     generator_kwargs={"depth": 2, "base": 8})  # fmt: skip
    trainer = _fit(task, batch, 2, tmp_path)
    assert float(task.train_gap_days) == pytest.approx(225.0)  # median of 90..360
    ckpt = tmp_path / "temporal.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_task(ckpt).eval()
    assert type(loaded) is TemporalTask and loaded.spec == task.spec
    assert loaded.prediction_gap_days == pytest.approx(225.0)
    assert loaded.hparams.generator == "attention_unet" and loaded.hparams.use_gap
    task.eval()
    inputs = {"image_t0": LO + (HI - LO) * batch["image_t0"], "mask_t": batch["mask_t"]}
    valid = {k: torch.ones(4, 1, 16, 16, dtype=torch.bool) for k in inputs}
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_batch(inputs, valid)["image"],
                                   task.predict_batch(inputs, valid)["image"])  # fmt: skip

    from rasterio.transform import from_origin

    transform = from_origin(500_000.0, 5_200_000.0, 10.0, 10.0)
    rng = np.random.default_rng(0)
    img = rng.integers(600, 2500, size=(4, 16, 28)).astype(np.uint16)
    img[:, 0, 0] = 0  # nodata
    mask = np.zeros((1, 16, 28), np.uint8)
    mask[0, 4:10, 6:12] = 1
    a = write_raster(tmp_path / "t0.tif", img, crs="EPSG:32633", transform=transform,
                     nodata=0, descriptions=BANDS)  # fmt: skip
    m = write_raster(tmp_path / "mask.tif", mask, crs="EPSG:32633", transform=transform)
    out = predict_scene(loaded, {"image_t0": a, "mask_t": m}, tmp_path / "pred.tif",
                        window=16, overlap=0.25, precision="32", progress=False)  # fmt: skip
    with rasterio.open(out) as ds:
        assert (ds.count, ds.height, ds.width) == (4, 16, 28)
        assert ds.dtypes == ("uint16",) * 4 and ds.nodata == 0
        assert ds.crs.to_epsg() == 32633 and ds.transform == transform
        assert ds.descriptions == tuple(BANDS)
        values = ds.read()
    assert (values[:, 0, 0] == 0).all() and (values[:, 1:, 1:] > 0).all()


# ------------------------------------------------------------------ segmentation
def seg_batch(n: int = 4, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Buildings are the bright squares: a frame-mode batch (``target`` = the image)."""
    g = torch.Generator().manual_seed(seed)
    img = 600 + 800 * torch.rand(n, 4, size, size, generator=g)
    label = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(3):
            r, c = (int(v) for v in torch.randint(0, size - 6, (2,), generator=g))
            label[i, :, r : r + 5, c : c + 5] = 1
    z = _z(torch.where(label > 0, img + 2000, img))
    return {"image_t0": z, "target": z, "mask_t0": label, "mask_t": label,
            "mask": torch.ones(n, 1, size, size, dtype=torch.bool)}  # fmt: skip


def test_segment_spec():
    task = SegmentTask(NORM, None, chip_size=32, channels_last=False)
    spec = task.spec
    assert spec.input_names == ["image"] and spec.inputs[0].unit == "reflectance"
    out = spec.outputs[0]
    assert (out.name, out.unit, out.dtype, out.channels) == ("buildings", "probability",
                                                             "float32", 1)  # fmt: skip
    assert task.monitor == "val_loss"
    y = task.decode(torch.tensor([[[[-20.0, 0.0, 20.0]]]]), {}, {})["buildings"]
    assert y.min() >= 0 and y.max() <= 1 and float(y[0, 0, 0, 1]) == 0.5


def test_segment_learns_bright_buildings(tmp_path):
    torch.manual_seed(0)
    task = SegmentTask(NORM, None, generator_kwargs={"base": 8, "depth": 2}, lr=1e-2,
                       chip_size=32, channels_last=False)  # fmt: skip
    trainer = _fit(task, seg_batch(), 50, tmp_path, val=seg_batch(seed=1))
    logged = trainer.callback_metrics
    assert float(logged["val_f1"]) > 0.9 and float(logged["val_iou"]) > 0.8, dict(logged)
    # a frame batch without "target" reads "image"
    b = seg_batch(n=2, size=16, seed=2)
    b["image"] = b.pop("target")
    x, label, mask = task.batch_roles(b)
    assert x.shape == (2, 4, 16, 16) and torch.equal(label, b["mask_t"])
