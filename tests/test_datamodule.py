"""ChipDataModule: loaders over a chip store's splits (or folds), train-only augmentation,
normalization from the manifest, and its state saved in Lightning checkpoints."""

import pickle

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler

from demgen.data.chips import ChipStore
from demgen.data.datamodule import ChipDataModule
from demgen.data.prepare import PrepareConfig, prepare_rasters
from demgen.io.raster import write_raster

CHIP = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("dm")
    from rasterio.transform import from_origin

    t = from_origin(500_000.0, 5_200_000.0, 10.0, 10.0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    dem = (300 + 2 * xx + yy + rng.normal(0, 1, (128, 128))).astype(np.float32)
    dem[3:6, 3:9] = -9999.0
    img = rng.integers(100, 5000, (3, 128, 128)).astype(np.uint16)
    err = rng.uniform(0, 2, (128, 128)).astype(np.float32)
    write_raster(d / "dem.tif", dem, crs="EPSG:32633", transform=t, nodata=-9999.0)
    write_raster(d / "img.tif", img, crs="EPSG:32633", transform=t, descriptions=["R", "G", "B"])
    write_raster(d / "err.tif", err, crs="EPSG:32633", transform=t)
    cfg = PrepareConfig(chip_size=CHIP, block=2, folds=3, normalize="residual")
    out = prepare_rasters(
        [d / "img.tif"], [d / "dem.tif"], d / "store", cfg, extras=[d / "err.tif"]
    )
    return str(out)


def stored_chip(st, norm, j):
    """Chip ``j``'s image as a loader serves it unaugmented: normalized, and invalid pixels
    set to the strategy's fill value (see demgen.data.chips.image_fill_value)."""
    from demgen.data.chips import fill_invalid, image_fill_value

    x = norm.apply(np.asarray(st.image[j], np.float32))
    return fill_invalid(x, np.asarray(st.mask[j])[None], image_fill_value(norm))


def all_batches(loader):
    return list(loader)


def cat(batches, key):
    return torch.cat([b[key] for b in batches])


def test_batches_shapes_dtypes_and_masks(store):
    dm = ChipDataModule(store, batch_size=4, extra=True)
    dm.setup("fit")
    st = ChipStore(store)
    assert dm.bands == ["R", "G", "B"] and dm.in_channels == 4
    b = next(iter(dm.train_dataloader()))
    assert b["image"].shape == (4, 3, CHIP, CHIP) and b["image"].dtype == torch.float32
    assert b["target"].shape == (4, 1, CHIP, CHIP) and b["target"].dtype == torch.float32
    assert b["mask"].shape == (4, 1, CHIP, CHIP) and b["mask"].dtype == torch.bool
    assert b["extra"].shape == (4, 1, CHIP, CHIP) and torch.isfinite(b["extra"]).all()
    assert b["offset"].shape == (4,) and b["index"].shape == (4,)
    # the masks are the store's (the DEM's nodata block) and targets are 0 there
    holes = 0
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            for k, j in enumerate(batch["index"].tolist()):
                m = batch["mask"][k, 0].numpy()
                np.testing.assert_array_equal(m, st.mask[j])
                assert torch.all(batch["target"][k, 0][~batch["mask"][k, 0]] == 0)
                holes += int((~m).sum())
    train_holes = sum(int((~b["mask"]).sum()) for b in dm.train_dataloader())
    assert holes + train_holes == 18  # the 3 x 6 nodata pixels, wherever that chip went


def test_split_indices_match_the_manifest(store):
    st = ChipStore(store)
    dm = ChipDataModule(store, batch_size=5)
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)  # DDP can swap it
    assert isinstance(dm.val_dataloader().sampler, SequentialSampler)
    train = cat(all_batches(dm.train_dataloader()), "index").tolist()
    assert sorted(train) == sorted(st.manifest["splits"]["train"])
    assert cat(all_batches(dm.val_dataloader()), "index").tolist() == st.manifest["splits"]["val"]
    assert cat(all_batches(dm.test_dataloader()), "index").tolist() == st.manifest["splits"]["test"]
    assert dm.normalization["elevation"] == st.manifest["normalization"]["elevation"]
    assert dm.elevation_norm.gsf == st.manifest["normalization"]["elevation"]["gsf"]


def test_folds_use_their_own_splits_and_normalization(store):
    st = ChipStore(store)
    for f in range(3):
        dm = ChipDataModule(store, batch_size=64, fold=f, augment=False)
        fold = st.manifest["folds"][f]
        assert sorted(cat(all_batches(dm.train_dataloader()), "index").tolist()) == fold["train"]
        assert cat(all_batches(dm.val_dataloader()), "index").tolist() == fold["val"]
        assert cat(all_batches(dm.test_dataloader()), "index").tolist() == fold["test"]
        assert dm.normalization == fold["normalization"]
    with pytest.raises(ValueError, match="no fold 3"):
        ChipDataModule(store, fold=3)


def test_fold_validation_is_never_test_data(store):
    """Early stopping, the LR schedule and best.ckpt follow the val loader: for every fold of
    a --folds store it serves chips that are neither that fold's test nor training chips."""
    st = ChipStore(store)
    for f in range(len(st.manifest["folds"])):
        dm = ChipDataModule(store, batch_size=64, fold=f, augment=False, num_workers=0)
        dm.setup("fit")
        seen = {
            s: set(cat(all_batches(getattr(dm, f"{s}_dataloader")()), "index").tolist())
            for s in ("train", "val", "test")
        }
        assert seen["val"], f"fold {f} has no validation chips"
        assert not seen["val"] & seen["test"], f"fold {f}: val chips are test chips"
        assert not seen["val"] & seen["train"], f"fold {f}: val chips are training chips"
        assert not seen["train"] & seen["test"]


def test_old_fold_stores_without_validation_are_refused(store, tmp_path):
    import json
    import shutil

    from demgen.errors import InputError

    old = tmp_path / "old"
    shutil.copytree(store, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for fold in manifest["folds"]:
        fold.pop("val")
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="prepare it again with --folds"):
        ChipDataModule(str(old), fold=0)


def test_pixel_size_and_vertical_datum_of_stores(store, tmp_path):
    import json
    import shutil

    from demgen.data.datamodule import manifest_pixel_size

    dm = ChipDataModule(store)
    assert dm.pixel_size == pytest.approx(10.0) and dm.vertical_crs == "unknown"
    # what demgen prepare records wins over the grids; stores without grids (npz) have none
    assert manifest_pixel_size({"pixel_size_m": [8.0, 12.5], "scenes": []}) == pytest.approx(10.0)
    assert manifest_pixel_size({"source": "npz", "scenes": []}) is None
    geo = {"crs": "EPSG:4326", "transform": [1 / 3600, 0, 10, 0, -1 / 3600, 46.5],
           "width": 3600, "height": 3600}  # fmt: skip
    assert 25.0 < manifest_pixel_size({"scenes": [{"grid": geo}]}) < 27.0  # 1" at 46 N
    copy = tmp_path / "v"
    shutil.copytree(store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["vertical_crs"] = "EGM96 height"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert ChipDataModule(str(copy)).vertical_crs == "EGM96 height"


def test_only_train_is_augmented_and_val_test_are_deterministic(store):
    st = ChipStore(store)
    dm = ChipDataModule(store, batch_size=4, augment=True)
    norm = dm.image_norm
    for loader in (dm.val_dataloader, dm.test_dataloader):
        a, b = all_batches(loader()), all_batches(loader())
        for x, y in zip(a, b, strict=True):
            for key in ("image", "target", "mask", "index"):
                assert torch.equal(x[key], y[key])
        for batch in a:  # unaugmented: exactly the normalized stored chip
            for k, j in enumerate(batch["index"].tolist()):
                want = stored_chip(st, norm, j)
                np.testing.assert_allclose(batch["image"][k].numpy(), want, rtol=1e-6)
    torch.manual_seed(0)
    seen: list[dict[int, torch.Tensor]] = [{}, {}]
    for epoch in range(2):
        for raw in dm.train_dataloader():
            assert raw["aug"].shape == raw["index"].shape  # drawn per chip, applied below
            batch = dm.on_after_batch_transfer(raw, 0)  # as the Trainer does, on the device
            assert "aug" not in batch
            for k, j in enumerate(batch["index"].tolist()):
                seen[epoch][j] = batch["image"][k]
    moved = sum(
        not torch.allclose(x, torch.from_numpy(stored_chip(st, norm, j)))
        for j, x in seen[0].items()
    )
    assert moved > 0  # training chips are rotated/flipped ...
    assert any(not torch.equal(x, seen[1][j]) for j, x in seen[0].items())  # ... anew each epoch
    dm_off = ChipDataModule(store, batch_size=4, augment=False)
    for batch in dm_off.train_dataloader():
        assert "aug" not in batch
        for k, j in enumerate(batch["index"].tolist()):
            plain = torch.from_numpy(stored_chip(st, norm, j))
            assert torch.allclose(batch["image"][k], plain)


def test_workers_get_the_store_by_path_not_by_copy(store):
    dm = ChipDataModule(store, augment=False)
    ds = dm.dataset("train")
    blob = pickle.dumps(ds)
    assert len(blob) < ChipStore(store).image.nbytes  # the memory maps are not pickled
    back = pickle.loads(blob)
    assert isinstance(back.store.image, np.memmap)
    for key in ("image", "target", "mask"):
        assert torch.equal(back[3][key], ds[3][key])


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def training_step(self, batch, _):
        pred = self.conv(batch["image"])
        m = batch["mask"]
        return ((pred - batch["target"])[m] ** 2).mean()

    def validation_step(self, batch, _):
        self.log("val_loss", ((self.conv(batch["image"]) - batch["target"]) ** 2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_fits_and_checkpoint_carries_normalization(store, tmp_path):
    dm = ChipDataModule(store, batch_size=8)
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=1,
    )
    trainer.fit(_Tiny(), datamodule=dm)
    ckpt_path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=True)
    state = ckpt["ChipDataModule"]
    assert state["bands"] == ["R", "G", "B"]
    assert state["normalization"]["elevation"]["strategy"] == "residual"
    assert ckpt["datamodule_hyper_parameters"]["store"] == store
    dm.load_state_dict(state)  # same store: accepted
    state["normalization"] = {"image": {}, "elevation": {}}
    with pytest.raises(ValueError, match="normalization differ"):
        dm.load_state_dict(state)


def test_workers_and_pinning_are_chosen_for_the_machine(store, monkeypatch):
    import demgen.data.datamodule as dmod

    monkeypatch.setattr(dmod, "_cuda_available", lambda: False)
    assert dmod.auto_num_workers() == 0  # CPU training: the cores belong to the model
    dm = ChipDataModule(store)
    assert dm.num_workers == 0 and not dm.pin_memory
    assert ChipDataModule(store, num_workers=3).num_workers == 3
    monkeypatch.setattr(dmod, "_cuda_available", lambda: True)
    monkeypatch.setattr(dmod.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert dmod.auto_num_workers() == 8
    monkeypatch.setattr(dmod.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert dmod.auto_num_workers() == 1
    dm = ChipDataModule(store, augment=False)
    assert dm.num_workers == 1 and dm.pin_memory


def test_store_names_its_layers_and_old_manifests_derive_them(store, tmp_path):
    import json
    import shutil

    st = ChipStore(store)
    layers = st.manifest["layers"]
    assert list(layers)[:3] == ["image", "elevation", "mask"] and "err" in layers
    assert layers["image"] == {"file": "image.npy", "channels": 3, "bands": ["R", "G", "B"],
                               "unit": "reflectance", "kind": "image"}  # fmt: skip
    assert layers["elevation"]["unit"] == "metre" and layers["err"]["index"] == [0]
    assert isinstance(st.layer("image"), np.memmap) and st.layer("err").shape[1] == 1
    np.testing.assert_array_equal(st.read_layer("err", 2), np.asarray(st.extra[2]))
    # a store written before the table existed derives the same one
    old = tmp_path / "old"
    shutil.copytree(store, old)
    mf = json.loads((old / "manifest.json").read_text())
    del mf["layers"]
    (old / "manifest.json").write_text(json.dumps(mf))
    assert ChipStore(old).layers == st.layers
    with pytest.raises(KeyError, match="no layer 'landcover'"):
        st.layer("landcover")


def test_roles_swapped_serve_heights_in_and_image_out(store):
    """The same store learns DEM -> image: ``input`` is the normalized heights, ``target``
    the image bands normalized with the stored statistics (invalid pixels the fill)."""
    dm = ChipDataModule(store, batch_size=4, augment=False, num_workers=0,
                        inputs=["elevation"], targets=["image"])  # fmt: skip
    plain = ChipDataModule(store, batch_size=4, augment=False, num_workers=0)
    dm.setup("fit")
    plain.setup("fit")
    b, p = next(iter(dm.val_dataloader())), next(iter(plain.val_dataloader()))
    n = len(b["index"])
    assert b["input"].shape == (n, 1, CHIP, CHIP) and b["target"].shape == (n, 3, CHIP, CHIP)
    torch.testing.assert_close(b["input"], p["target"])  # heights, normalized as the target was
    torch.testing.assert_close(b["target"], p["image"])
    st = ChipStore(store)
    j = int(b["index"][0])
    np.testing.assert_allclose(b["target"][0].numpy(), stored_chip(st, st.image_norm(), j),
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    assert "input" not in p and torch.equal(p["target"], b["input"])  # defaults: today's batch
    # an extra layer as input beside the image, and augmentation turns "input" alike
    aug = ChipDataModule(store, batch_size=4, num_workers=0, augment=True, augment_seed=1,
                         inputs=["image", "err"], targets=["elevation"])  # fmt: skip
    aug.setup("fit")
    batch = aug.on_after_batch_transfer(next(iter(aug.train_dataloader())), 0)
    torch.testing.assert_close(batch["input"][:, :3], batch["image"])
    with pytest.raises(Exception, match="no layer 'nope'"):
        ChipDataModule(store, inputs=["nope"])
