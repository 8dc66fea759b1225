"""demgen landscape: procedural terrain -> DEM -> a DEM -> image checkpoint -> 3D view.

One tiny dem2image checkpoint (and one image -> DEM checkpoint, to be refused) is fitted
two steps on a small synthetic world, once for the module."""

from __future__ import annotations

import json
import re

import lightning as L
import numpy as np
import pytest
import rasterio
import torch

from demgen.cli import main
from demgen.data.synth import SceneConfig, generate_scene
from demgen.data.synth.perlin_terrain import perlin_relief, perlin_terrain
from demgen.errors import InputError
from demgen.landscape import FILES, landscape_config, make_landscape, synth_dtm

SIZE = 64  # the smallest landscape: 4 windows of the tiny model

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit_save(task, dm, path, tmp) -> None:
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=0,
                        accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp)  # fmt: skip
    trainer.fit(task, dm)
    trainer.save_checkpoint(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"dem2image": path, "regression": path}: tiny checkpoints of both directions."""
    from demgen.data.synth_datamodule import SynthWorldDataModule
    from demgen.tasks.dem2image import Dem2ImageTask
    from demgen.tasks.regression import DEMRegressionTask

    d = tmp_path_factory.mktemp("landscape_ckpt")
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        kw = {"cache_dir": str(d / "cache"), "n_scenes": 3, "size": 128, "chip_size": 32,
              "augment": False, "batch_size": 8, "num_workers": 0}  # fmt: skip
        dm = SynthWorldDataModule(inputs=["elevation"], targets=["image"], **kw)
        norms = dm.normalization
        task = Dem2ImageTask(norms["image"], norms["elevation"], chip_size=32,
                             pixel_size=dm.pixel_size, depth=2, base=8)  # fmt: skip
        _fit_save(task, dm, d / "dem2image.ckpt", d)
        dm = SynthWorldDataModule(**kw)  # the same store, image -> elevation
        task = DEMRegressionTask(norms["image"], norms["elevation"], chip_size=32,
                                 pixel_size=dm.pixel_size, depth=2, base=8)  # fmt: skip
        _fit_save(task, dm, d / "regression.ckpt", d)
        yield {"dem2image": d / "dem2image.ckpt", "regression": d / "regression.ckpt"}
    finally:
        torch.set_num_threads(n_threads)


# ------------------------------------------------------------------ terrains (no model)
def test_perlin_terrain_is_seeded_in_metres_and_seamless():
    p = perlin_relief("hills")
    a = perlin_terrain(96, 7, pixel_size=10.0, **p)
    assert a.dtype == np.float32 and a.shape == (96, 96)
    assert np.array_equal(a, perlin_terrain(96, 7, pixel_size=10.0, **p))
    assert not np.array_equal(a, perlin_terrain(96, 8, pixel_size=10.0, **p))
    lo, hi = p["base_height_m"], p["base_height_m"] + p["relief_m"]
    assert (lo, hi) == (-150.0, 1500.0)  # the hills preset's elevation range
    assert lo <= a.min() and a.max() <= hi and a.max() - a.min() > 50  # real relief
    for relief in ("plains", "alpine"):
        q = perlin_relief(relief)
        b = perlin_terrain(64, 7, pixel_size=10.0, **q)
        assert q["base_height_m"] <= b.min() <= b.max() <= q["base_height_m"] + q["relief_m"]
    # a crop of a larger terrain is the smaller terrain computed at that offset
    big = perlin_terrain((200, 150), 3, pixel_size=20.0, relief_m=300.0, base_height_m=10.0)
    tile = perlin_terrain((64, 50), 3, pixel_size=20.0, relief_m=300.0, base_height_m=10.0,
                          offset=(37, 81))  # fmt: skip
    assert np.array_equal(big[37:101, 81:131], tile)
    with pytest.raises(InputError):
        perlin_relief("moon")


def test_synth_terrain_is_the_synthetic_worlds_dtm(tmp_path):
    cfg = landscape_config(11, "alpine", 64, 20.0)
    scene = generate_scene(tmp_path / "s", SceneConfig(size=64, seed=11, relief="alpine",
                                                       pixel_size=20.0))  # fmt: skip
    with rasterio.open(scene / "dtm.tif") as ds:
        assert np.array_equal(ds.read(1), synth_dtm(cfg))
        assert ds.transform.c == cfg.origin[0] and ds.transform.f == cfg.origin[1]


# ------------------------------------------------------------------ landscapes
def test_same_seed_same_files_other_seed_other_dem(checkpoints, tmp_path):
    ckpt = checkpoints["dem2image"]
    a = make_landscape(tmp_path / "a", ckpt, seed=3, size=SIZE, progress=False, precision="32")
    b = make_landscape(tmp_path / "b", ckpt, seed=3, size=SIZE, progress=False, precision="32")
    assert set(a) == {"dem", "image", "view"} and a["dem"] == tmp_path / "a" / FILES["dem"]
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes(), key
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(FILES.values())
    c = make_landscape(tmp_path / "c", ckpt, seed=4, size=SIZE, progress=False, precision="32")
    with rasterio.open(a["dem"]) as da, rasterio.open(c["dem"]) as dc:
        assert not np.array_equal(da.read(1), dc.read(1))

    with rasterio.open(a["dem"]) as dem, rasterio.open(a["image"]) as img:
        assert dem.dtypes == ("float32",) and dem.shape == (SIZE, SIZE)
        assert dem.tags()["vertical_crs"] == "unknown" and dem.crs.to_epsg() == 32633
        assert dem.res == (10.0, 10.0)  # the checkpoint's pixel size
        z = dem.read(1)
        assert np.isfinite(z).all() and -150.0 <= z.min() < z.max() <= 1500.0
        assert img.count == 4 and img.dtypes == ("uint16",) * 4
        assert img.descriptions == ("B2", "B3", "B4", "B8")
        assert img.crs == dem.crs and img.transform == dem.transform and img.shape == dem.shape
        assert img.read().max() > 0

    text = a["view"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert all("src=" not in tag for tag in re.findall(r"<script[^>]*>", text))
    m = re.search(r'<script type="application/json" id="demgen-data">(.*?)</script>', text, re.S)
    data = json.loads(m.group(1))
    assert data["default_layer"] == "image" and "image" in data["layers"]
    assert "seed 3" in text


def test_cli_perlin_prints_the_three_paths(checkpoints, tmp_path, capsys):
    out = tmp_path / "p"
    rc = main(["landscape", str(out), "--checkpoint", str(checkpoints["dem2image"]),
               "--terrain", "perlin", "--relief", "plains", "--seed", "9",
               "--size", str(SIZE + 8), "--precision", "32", "-q"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    for name in FILES.values():
        assert str(out / name) in printed
    with rasterio.open(out / "dem.tif") as ds:
        z = ds.read(1)
        assert ds.shape == (SIZE + 8, SIZE + 8) and ds.tags()["landscape_terrain"] == "perlin"
    p = perlin_relief("plains")
    assert p["base_height_m"] <= z.min() and z.max() <= p["base_height_m"] + p["relief_m"]
    assert np.array_equal(z, perlin_terrain(SIZE + 8, 9, pixel_size=10.0, **p))


def _one_line_error(capsys, argv, expect: str) -> None:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and expect in lines[0], lines


def test_image_to_dem_checkpoint_is_refused(checkpoints, tmp_path, capsys):
    out = tmp_path / "r"
    _one_line_error(capsys, ["landscape", str(out), "--checkpoint",
                             str(checkpoints["regression"]), "--size", str(SIZE), "-q"],
                    "not a DEM -> image checkpoint")  # fmt: skip
    assert not out.exists()


def test_existing_out_is_refused_unless_overwrite(checkpoints, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    argv = ["landscape", str(out), "--checkpoint", str(checkpoints["dem2image"]),
            "--size", str(SIZE), "--precision", "32", "-q"]  # fmt: skip
    _one_line_error(capsys, argv, "already exists")
    assert (out / "keep.txt").read_text() == "precious"
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--size", "32"], "at least 64"),
        (["--seed", "-1"], ">= 0"),
        (["--terrain", "fractal"], "invalid choice"),
        (["--relief", "moon"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(tmp_path, capsys, extra, expect):
    out = tmp_path / "x"
    _one_line_error(capsys, ["landscape", str(out), "--checkpoint", "m.ckpt", *extra], expect)
    assert not out.exists()


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["landscape", str(tmp_path / "x"), "--checkpoint",
                             str(tmp_path / "none.ckpt"), "-q"], "none.ckpt")  # fmt: skip
