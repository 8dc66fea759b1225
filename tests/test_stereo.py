"""Synthetic stereo layers: initial DSM errors, holes, second ortho, triangulation error."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from demgen.data.synth import STEREO_FILES, SceneConfig, StereoConfig, generate_scene
from demgen.data.synth.stereo import NODATA

FILES = (*STEREO_FILES, "ndvi.tif")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("stereo")
    cfg = SceneConfig(size=128, seed=3, relief="hills", stereo=True, erosion_iterations=6)
    return generate_scene(d / "s", cfg)


def read(path, bands=1):
    with rasterio.open(path) as ds:
        return ds.read(bands), ds.profile


def test_files_exist_and_share_the_grid(scene):
    _, ref = read(scene / "dsm.tif")
    meta = json.loads((scene / "scene.json").read_text())
    assert meta["config"]["stereo"] is True
    for f in FILES:
        assert f in meta["files"] and (scene / f).is_file()
        _, p = read(scene / f)
        assert (p["width"], p["height"], p["crs"], p["transform"]) == (
            ref["width"],
            ref["height"],
            ref["crs"],
            ref["transform"],
        )
    img, p_img = read(scene / "image.tif", [1, 2, 3, 4])
    o2, p_o2 = read(scene / "ortho2.tif", [1, 2, 3, 4])
    assert p_o2["count"] == 4 and p_o2["dtype"] == p_img["dtype"] == "uint16"
    assert np.abs(img.astype(float) - o2).mean() > 20  # another sun and view: they differ
    _, p_init = read(scene / "initial_dsm.tif")
    assert p_init["nodata"] == NODATA and p_init["dtype"] == "float32"


def test_initial_dsm_errors_blunders_and_holes(scene):
    dsm, _ = read(scene / "dsm.tif")
    init, _ = read(scene / "initial_dsm.tif")
    tri, _ = read(scene / "triangulation_error.tif")
    hole = init == NODATA
    assert 0.01 < hole.mean() < 0.4  # holes exist, as nodata
    assert np.isfinite(init).all()
    err = (init - dsm)[~hole]
    assert 1.0 < np.abs(err).mean() < 15.0
    assert (np.abs(err) > 15).sum() >= 10  # blunders of tens of metres, up and down
    assert (err > 15).any() and (err < -15).any()
    # error std grows with slope (tan of the true DSM's slope), away from blunders
    gy, gx = np.gradient(dsm.astype(float), 10.0)
    slope = np.hypot(gx, gy)[~hole]
    calm = np.abs(err) < 10
    lo = np.std(err[calm & (slope < np.quantile(slope, 0.3))])
    hi = np.std(err[calm & (slope > np.quantile(slope, 0.7))])
    assert hi > 1.15 * lo
    # the triangulation error points at the wrong pixels
    assert np.corrcoef(tri[~hole], np.abs(err))[0, 1] > 0.5
    assert (tri[hole] == StereoConfig().hole_error_m).all()


def test_same_seed_identical_and_tiling_invisible(tmp_path):
    cfg = SceneConfig(size=80, seed=7, relief="alpine", stereo=True, erosion_iterations=2)
    a = generate_scene(tmp_path / "a", cfg)
    b = generate_scene(tmp_path / "b", cfg)
    c = generate_scene(tmp_path / "c", SceneConfig(**{**cfg.__dict__, "tile": 32}))
    d = generate_scene(tmp_path / "d", SceneConfig(**{**cfg.__dict__, "seed": 8}))
    for f in FILES:
        x = read(a / f, None)[0]
        assert np.array_equal(x, read(b / f, None)[0]), f
        assert np.array_equal(x, read(c / f, None)[0]), f  # tiled == untiled, bit for bit
    assert not np.array_equal(read(a / FILES[0])[0], read(d / FILES[0])[0])


def test_synth_cli_stereo_flag(tmp_path):
    out = tmp_path / "w"
    cmd = [sys.executable, "-m", "demgen", "synth", str(out), "--size", "48", "--stereo", "-q"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert all((out / "scene_000" / f).is_file() for f in FILES)
    plain = tmp_path / "p"
    subprocess.run(cmd[:4] + [str(plain), "--size", "48", "-q"], check=True)
    assert not (plain / "scene_000" / "initial_dsm.tif").exists()
