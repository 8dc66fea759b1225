"""`demgen prepare` / `demgen info`: documented flags, and every bad input gives one line,
exit code 2, the file named, no traceback and no half-written store."""

import subprocess
import sys

import numpy as np
import pytest
from rasterio.transform import from_origin

from demgen.cli import main
from demgen.io.raster import write_raster


@pytest.fixture
def files(tmp_path, transform):
    rng = np.random.default_rng(0)
    img = rng.integers(100, 3000, (3, 96, 96)).astype(np.uint16)
    dem = rng.normal(300, 10, (96, 96)).astype(np.float32)
    write_raster(
        tmp_path / "img.tif",
        img,
        crs="EPSG:32633",
        transform=transform,
        descriptions=["B4", "B3", "B2"],
    )
    write_raster(tmp_path / "dem.tif", dem, crs="EPSG:32633", transform=transform)
    far = from_origin(900_000.0, 1_000_000.0, 10.0, 10.0)
    write_raster(tmp_path / "far.tif", dem, crs="EPSG:32633", transform=far)
    write_raster(tmp_path / "nocrs.tif", dem, crs=None, transform=transform)
    write_raster(
        tmp_path / "feet.tif", dem / 0.3048, crs="EPSG:32633", transform=transform, units=["ft"]
    )
    write_raster(
        tmp_path / "holes.tif",
        np.full_like(dem, -9999),
        crs="EPSG:32633",
        transform=transform,
        nodata=-9999,
    )
    (tmp_path / "junk.tif").write_bytes(b"not a raster")
    data = (tmp_path / "img.tif").read_bytes()
    (tmp_path / "trunc.tif").write_bytes(data[: len(data) // 2])
    return tmp_path


def prep(files, *extra, image="img.tif", dem="dem.tif"):
    return [
        "prepare",
        "--image",
        str(files / image),
        "--dem",
        str(files / dem),
        "-o",
        str(files / "store"),
        "--chip-size",
        "32",
        "-q",
        *extra,
    ]


@pytest.mark.parametrize(
    "case, expect",
    [
        (dict(dem="far.tif"), "do not overlap"),
        (dict(dem="nocrs.tif"), "nocrs.tif: raster has no CRS"),
        (dict(image="junk.tif"), "junk.tif: not a readable raster"),
        (dict(image="trunc.tif"), "trunc.tif"),
        (dict(bands=["--bands", "B4,B9"]), "band 'B9' does not exist"),
        (dict(dem="holes.tif"), "no valid chips"),
        (dict(dem="feet.tif"), "feet.tif: heights are in feet"),
        (dict(image="missing.tif"), "missing.tif: no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_store(files, capsys, case, expect):
    case = dict(case)
    extra = case.pop("bands", [])
    assert main(prep(files, *extra, **case)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
    assert "Traceback" not in err
    assert not (files / "store").exists()
    assert not [p for p in files.iterdir() if p.name.startswith(".store")]


def test_existing_output_refused_unless_overwrite(files, capsys):
    (files / "store").mkdir()
    assert main(prep(files)) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(prep(files, "--overwrite")) == 0
    assert (files / "store" / "manifest.json").exists()


def test_feet_converted_when_told(files, capsys):
    assert main(prep(files, "--z-unit", "ft", dem="feet.tif")) == 0
    from demgen.data.chips import ChipStore
    from demgen.io.raster import read_raster

    st = ChipStore(files / "store")
    dem = read_raster(files / "dem.tif")[0][0]
    for j, ch in enumerate(st.chips):
        r, c = ch["row"], ch["col"]
        np.testing.assert_allclose(st.elevation[j], dem[r : r + 32, c : c + 32], rtol=1e-6)
    assert st.manifest["z_unit"] == "m" and st.manifest["z_source_unit"] == "ft"


def test_info_summarizes(files, capsys):
    assert main(prep(files, "--bands", "B2,B3", "--normalize", "residual", "--folds", "3")) == 0
    capsys.readouterr()
    assert main(["info", str(files / "store")]) == 0
    out = capsys.readouterr().out
    for word in (
        "chips: 9",
        "train",
        "val",
        "test",
        "bands: B2 B3",
        "residual",
        "gsf",
        "area covered",
        "EPSG:32633",
        "3 folds",
    ):
        assert word in out, word
    assert main(["info", str(files / "nothing")]) == 2


def test_help_documents_the_options_and_no_traceback_in_a_subprocess(files):
    r = subprocess.run(
        [sys.executable, "-m", "demgen", "prepare", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0
    for flag in (
        "--image",
        "--dem",
        "--npz",
        "--bands",
        "--grid",
        "--chip-size",
        "--stride",
        "--normalize",
        "global-shift",
        "zscore",
        "residual",
        "--overwrite",
        "--z-unit",
        "--cloud-mask",
        "--split",
        "--folds",
        "--max-invalid",
        "percentile",
    ):
        assert flag in r.stdout, flag
    r = subprocess.run(
        [sys.executable, "-m", "demgen", *prep(files, dem="far.tif")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
