"""The chip store: atomic writes, memory-mapped reads, normalized samples that invert to metres."""

import json

import numpy as np
import pytest
import torch

from demgen.data.chips import ChipDataset, ChipStore, ChipStoreWriter
from demgen.data.prepare import PrepareConfig, prepare_rasters
from demgen.errors import InputError
from demgen.io.raster import write_raster


@pytest.fixture
def rasters(tmp_path, transform):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:160]
    dem = (400 + 3 * xx + 2 * yy + rng.normal(0, 1, (160, 160))).astype(np.float32)
    dem[10:20, 10:20] = -9999
    img = rng.integers(100, 5000, (3, 160, 160)).astype(np.uint16)
    write_raster(tmp_path / "dem.tif", dem, crs="EPSG:32633", transform=transform, nodata=-9999)
    write_raster(
        tmp_path / "img.tif",
        img,
        crs="EPSG:32633",
        transform=transform,
        descriptions=["B4", "B3", "B2"],
    )
    return tmp_path / "img.tif", tmp_path / "dem.tif"


def test_writer_is_atomic_and_refuses_existing(tmp_path):
    out = tmp_path / "store"
    with (
        pytest.raises(RuntimeError),
        ChipStoreWriter(out, chip_size=8, bands=["a"], image_dtype=np.uint8) as w,
    ):
        w.add(np.zeros((1, 8, 8), np.uint8), np.zeros((8, 8)), np.ones((8, 8), bool), {})
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    with pytest.raises(InputError, match="already exists"):
        ChipStoreWriter(out, chip_size=8, bands=["a"], image_dtype=np.uint8)


def test_arrays_are_memory_mapped_with_patched_counts(tmp_path):
    out = tmp_path / "store"
    with ChipStoreWriter(out, chip_size=8, bands=["a", "b"], image_dtype=np.uint16) as w:
        for i in range(5):
            m = np.ones((8, 8), bool)
            m[0, 0] = False
            w.add(np.full((2, 8, 8), i, np.uint16), np.full((8, 8), 10.0 * i), m, {"i": i})
        w.commit(
            {
                "chip_size": 8,
                "stride": 8,
                "splits": {"train": [0, 1, 2], "val": [3], "test": [4]},
                "normalization": {},
            }
        )
    st = ChipStore(out)
    assert isinstance(st.image, np.memmap) and st.image.shape == (5, 2, 8, 8)
    assert st.elevation.shape == (5, 8, 8) and st.elevation.dtype == np.float32
    assert np.isnan(st.elevation[3, 0, 0]) and st.elevation[3, 1, 1] == 30.0
    assert st.chips[2]["z"][:3] == [63, 20.0, 20.0] and st.chips[2]["valid_fraction"] < 1
    assert [c["i"] for c in st.chips] == list(range(5))


@pytest.mark.parametrize("strategy", ["global", "global-shift", "zscore", "residual"])
def test_dataset_targets_return_metres(rasters, tmp_path, strategy):
    cfg = PrepareConfig(chip_size=32, normalize=strategy, block=1, max_invalid=0.2)
    st = ChipStore(prepare_rasters([rasters[0]], [rasters[1]], tmp_path / "st", cfg))
    norm = st.elevation_norm()
    assert st.manifest["normalization"]["elevation"]["strategy"] == strategy
    assert st.manifest["normalization"]["fitted_on"] == "train"
    for split in ("train", "val", "test"):
        ds = ChipDataset(st, split)
        for k in range(len(ds)):
            s = ds[k]
            j = int(s["index"])
            assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
            assert s["target"].shape == (1, 32, 32) and s["mask"].dtype == torch.bool
            back = norm.inverse(s["target"][0].double().numpy(), float(s["offset"]))
            m = s["mask"][0].numpy()
            np.testing.assert_allclose(back[m], st.elevation[j][m], atol=1e-3)
            assert np.all(s["target"][0].numpy()[~m] == 0)


def test_stats_are_fitted_on_train_only(rasters, tmp_path):
    cfg = PrepareConfig(chip_size=32, normalize="zscore", block=1)
    st = ChipStore(prepare_rasters([rasters[0]], [rasters[1]], tmp_path / "st", cfg))
    train = st.indices("train")
    assert 0 < len(train) < len(st)
    h = np.concatenate([st.elevation[i][st.mask[i]] for i in train]).astype(np.float64)
    d = st.manifest["normalization"]["elevation"]
    assert d["mean"] == pytest.approx(h.mean(), rel=1e-9)
    assert d["std"] == pytest.approx(h.std(), rel=1e-6)
    every = np.concatenate([st.elevation[i][st.mask[i]] for i in range(len(st))])
    assert abs(every.astype(np.float64).mean() - d["mean"]) > 1e-6


def test_augmentation_moves_image_target_and_mask_together(rasters, tmp_path):
    cfg = PrepareConfig(chip_size=32, block=1, image_normalize="scale")
    st = ChipStore(prepare_rasters([rasters[0]], [rasters[1]], tmp_path / "st", cfg))
    plain = ChipDataset(st, "train")
    aug = ChipDataset(st, "train", augment=True, seed=3)
    changed = 0
    for k in range(len(plain)):
        a, b = plain[k], aug[k]
        assert torch.equal(aug[k]["target"], b["target"])  # reproducible
        # the transform that maps the image also maps the target and the mask
        for rot in range(4):
            for flip in (False, True):

                def f(t, r=rot, fl=flip):
                    t = torch.rot90(t, r, (-2, -1))
                    return t.flip(-1) if fl else t

                if torch.equal(f(a["image"]), b["image"]):
                    assert torch.equal(f(a["target"]), b["target"])
                    assert torch.equal(f(a["mask"]), b["mask"])
                    changed += (rot, flip) != (0, False)
                    break
            else:
                continue
            break
        else:
            pytest.fail("augmented image is not a rotation/flip of the original")
    assert changed > 0
    json.dumps(st.manifest)  # the manifest stays plain JSON


def test_batched_augmentation_equals_per_chip_augmentation():
    """apply_batch transforms every spatial layer of chip i with its own code, as
    dihedral() does for that chip alone, and inverts with dihedral_inverse."""
    from demgen.data.augment import apply_batch, dihedral, dihedral_inverse

    g = torch.Generator().manual_seed(0)
    n = 16
    batch = {
        "image": torch.randn(n, 3, 8, 8, generator=g),
        "target": torch.randn(n, 1, 8, 8, generator=g),
        "mask": torch.rand(n, 1, 8, 8, generator=g) > 0.3,
        "offset": torch.arange(n, dtype=torch.float64),
        "aug": torch.arange(n) % 8,
    }
    out = apply_batch(dict(batch))
    assert "aug" not in out and torch.equal(out["offset"], batch["offset"])
    for i in range(n):
        code = int(batch["aug"][i])
        for key in ("image", "target", "mask"):
            assert torch.equal(out[key][i], dihedral(batch[key][i], code))
            assert torch.equal(dihedral_inverse(out[key][i], code), batch[key][i])
    # the 8 codes are 8 different transforms of a generic chip
    assert len({tuple(out["image"][i].flatten()[:5].tolist()) for i in range(8)}) == 8
    assert apply_batch({"image": batch["image"]})["image"] is batch["image"]
    with pytest.raises(ValueError, match="square"):
        apply_batch({"image": torch.zeros(2, 1, 4, 6), "aug": torch.tensor([1, 2])})
