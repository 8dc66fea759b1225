"""`demgen prepare` / `demgen info`: documented flags, and every bad input gives one line,
exit code 2, the file named, no traceback and no half-written store."""

import subprocess
import sys

import numpy as np
import pytest
import torch
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
        "--extra",
        "initial_dsm",
        "--extra-heights",
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


@pytest.fixture
def extras(files, transform):
    """An initial DSM in feet, a second ortho on a larger, shifted grid, an error layer."""
    from demgen.io.raster import read_raster

    dem = read_raster(files / "dem.tif")[0][0]
    dsm = ((dem + 2.5) / 0.3048).astype(np.float32)
    dsm[40:44, 50:54] = -9999.0  # its nodata
    write_raster(
        files / "dsm_ft.tif", dsm, crs="EPSG:32633", transform=transform, nodata=-9999.0,
        units=["ft"],
    )  # fmt: skip
    rng = np.random.default_rng(1)
    ortho = rng.integers(1, 4000, (110, 120)).astype(np.uint16)  # 7 rows, 5 cols more, NW
    ortho[7 + 70 : 7 + 73, 5 + 10 : 5 + 13] = 0  # its nodata
    west = from_origin(transform.c - 5 * 10.0, transform.f + 7 * 10.0, 10.0, 10.0)
    write_raster(files / "ortho.tif", ortho, crs="EPSG:32633", transform=west, nodata=0)
    err = rng.uniform(0, 3, (96, 96)).astype(np.float32)
    err[5:7, 80:83] = np.nan  # NaN counts as invalid too
    write_raster(files / "err.tif", err, crs="EPSG:32633", transform=transform)
    return dem, dsm, ortho[7 : 7 + 96, 5 : 5 + 96], err


def test_extra_layers_land_aligned_converted_and_masked(files, extras, capsys):
    from demgen.data.chips import ChipDataset, ChipStore

    dem, dsm_ft, ortho, err = extras
    args = prep(
        files,
        "--z-unit",
        "ft",
        "--max-invalid",
        "0.5",
        "--extra",
        f"initial_dsm={files / 'dsm_ft.tif'}",
        f"ortho2={files / 'ortho.tif'}",
        str(files / "err.tif"),
        dem="feet.tif",
    )
    assert main(args) == 0
    st = ChipStore(files / "store")
    m = st.manifest
    assert m["extra_layers"] == ["initial_dsm", "ortho2", "err"]
    kinds = [(e["name"], e["kind"], e["unit"]) for e in st.extras]
    assert kinds[0] == ("initial_dsm", "height", "m") and st.extras[0]["source_unit"] == "ft"
    assert kinds[1][1] == kinds[2][1] == "value" and st.extras[1]["source_unit"] is None
    assert st.extra.shape == (len(st), 3, 32, 32) and st.extra.dtype == np.float32
    assert len(st) == 9
    invalid = np.zeros((96, 96), bool)
    invalid[40:44, 50:54] = invalid[70:73, 10:13] = invalid[5:7, 80:83] = True
    for j, ch in enumerate(st.chips):
        w = np.s_[ch["row"] : ch["row"] + 32, ch["col"] : ch["col"] + 32]
        ok = ~invalid[w]
        np.testing.assert_array_equal(st.mask[j], ok)  # every extra's nodata / NaN is masked
        # the DSM in feet became metres like the DEM (dem.tif is feet.tif in metres)
        np.testing.assert_allclose(st.extra[j, 0][ok], dem[w][ok] + 2.5, rtol=1e-6)
        np.testing.assert_allclose(st.elevation[j][ok], dem[w][ok], rtol=1e-6)
        np.testing.assert_array_equal(st.extra[j, 1][ok], ortho[w][ok])  # shifted grid lands
        np.testing.assert_array_equal(st.extra[j, 2][ok], err[w][ok])
        assert np.all(np.isnan(st.extra[j][:, ~ok])) and np.all(np.isnan(st.elevation[j][~ok]))
    s = ChipDataset(st, "train", extra=True)[0]
    assert s["extra"].shape == (3, 32, 32) and bool(torch.isfinite(s["extra"]).all())
    capsys.readouterr()
    assert main(["info", str(files / "store")]) == 0
    assert "extra layers: initial_dsm (height, m), ortho2 (value" in capsys.readouterr().out


def test_extra_heights_flag_and_feet_extras_need_z_unit(files, extras, capsys, transform):
    from demgen.data.chips import ChipStore

    dem = extras[0]
    lidar = files / "lidar.tif"
    write_raster(lidar, dem + 1.0, crs="EPSG:32633", transform=transform)
    assert main(prep(files, "--extra", f"lidar={lidar}", "--extra-heights", "lidar")) == 0
    st = ChipStore(files / "store")
    assert st.extras[0]["kind"] == "height" and st.extras[0]["source_unit"] == "m (assumed)"
    ch = st.chips[0]
    w = np.s_[ch["row"] : ch["row"] + 32, ch["col"] : ch["col"] + 32]
    np.testing.assert_allclose(st.extra[0, 0], dem[w] + 1.0, rtol=1e-6)
    capsys.readouterr()
    # a height extra whose metadata says feet is refused without --z-unit, naming the file
    args = prep(files, "--overwrite", "--extra", f"dsm={files / 'dsm_ft.tif'}")
    assert main(args) == 2
    assert "dsm_ft.tif: heights are in feet" in capsys.readouterr().err
    # names must differ; --extra-heights must name an --extra layer
    assert main(prep(files, "--overwrite", "--extra", str(lidar), str(lidar))) == 2
    assert "--extra names must differ" in capsys.readouterr().err
    assert main(prep(files, "--overwrite", "--extra", str(lidar), "--extra-heights", "x")) == 2
    assert "--extra-heights names no --extra layer: x" in capsys.readouterr().err


def _strict_loads(text):
    """json.loads that refuses NaN / Infinity (RFC 8259 JSON only)."""
    import json

    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_geographic_pair_area_and_pixel_size_use_the_geodesy_helper(tmp_path, capsys):
    from demgen.data.chips import ChipStore
    from demgen.io.geodesy import pixel_size_m

    # 1 arc-second DEM and image around 45 N (GLO-30-like), 64 x 64 px
    t = from_origin(10.0, 45.0 + 32 / 3600, 1 / 3600, 1 / 3600)
    rng = np.random.default_rng(1)
    write_raster(tmp_path / "img.tif", rng.integers(100, 3000, (3, 64, 64)).astype(np.uint16),
                 crs="EPSG:4326", transform=t)  # fmt: skip
    write_raster(tmp_path / "dem.tif", rng.normal(500, 5, (64, 64)).astype(np.float32),
                 crs="EPSG:4326", transform=t)  # fmt: skip
    assert main(["prepare", "--image", str(tmp_path / "img.tif"), "--dem",
                 str(tmp_path / "dem.tif"), "-o", str(tmp_path / "st"), "--chip-size", "16",
                 "-q"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    m = ChipStore(tmp_path / "st").manifest
    x, y = pixel_size_m("EPSG:4326", t, 64, 64)
    assert (x, y) == pytest.approx((21.90, 30.87), abs=0.01)
    assert m["pixel_size_m"] == pytest.approx([x, y], rel=1e-9)
    assert m["scenes"][0]["pixel_size_m"] == pytest.approx([x, y], rel=1e-9)
    # all 16 chips of 16 x 16 px cover the grid once
    assert m["count"] == 16
    assert m["area_km2"] == pytest.approx(64 * 64 * x * y / 1e6, rel=1e-9)
    assert f"pixel size: {x:.2f} x {y:.2f} m; vertical datum: unknown" in out


def test_vertical_datum_from_a_compound_crs_or_a_tag_is_recorded(tmp_path, transform):
    from rasterio.crs import CRS

    from demgen.data.chips import ChipStore
    from demgen.data.prepare import PrepareConfig, manifest_geodesy_line, prepare_rasters
    from demgen.errors import InputError

    rng = np.random.default_rng(2)
    img = rng.integers(100, 3000, (3, 32, 32)).astype(np.uint16)
    dem = rng.normal(300, 10, (32, 32)).astype(np.float32)
    compound = CRS.from_user_input("EPSG:32633+5773")  # UTM 33N + EGM96 height
    write_raster(tmp_path / "img.tif", img, crs="EPSG:32633", transform=transform)
    write_raster(tmp_path / "dem.tif", dem, crs=compound, transform=transform)
    write_raster(tmp_path / "tag.tif", dem, crs="EPSG:32633", transform=transform,
                 vertical_crs="EGM2008 height")  # fmt: skip
    cfg = PrepareConfig(chip_size=8, block=1)
    m = ChipStore(prepare_rasters([tmp_path / "img.tif"], [tmp_path / "dem.tif"],
                                  tmp_path / "a", cfg)).manifest  # fmt: skip
    assert m["vertical_crs"] == "EGM96 height"
    assert m["pixel_size_m"] == [10.0, 10.0]
    # the datum does not move the grid: the image is read as is, not warped
    assert m["crs"] == "EPSG:32633" and m["scenes"][0]["resampling"]["image"] == ["none"]
    assert manifest_geodesy_line(m) == "pixel size: 10.00 x 10.00 m; vertical datum: EGM96 height"
    cfg_x = PrepareConfig(chip_size=8, block=1, extra_names=["initial_dsm"])
    m = ChipStore(prepare_rasters([tmp_path / "img.tif"], [tmp_path / "tag.tif"],
                                  tmp_path / "b", cfg_x, extras=[tmp_path / "tag.tif"],
                                  )).manifest  # fmt: skip
    assert m["vertical_crs"] == "EGM2008 height"
    assert m["extras"][0]["vertical_crs"] == "EGM2008 height"
    with pytest.raises(InputError, match="vertical datum"):
        prepare_rasters([tmp_path / "img.tif"], [tmp_path / "tag.tif", tmp_path / "dem.tif"],
                        tmp_path / "c", cfg)  # fmt: skip


def test_npz_import_has_no_pixel_size_and_unknown_datum(tmp_path):
    from demgen.data.chips import ChipStore
    from demgen.data.prepare import PrepareConfig, prepare_npz

    rng = np.random.default_rng(3)
    np.savez(tmp_path / "c.npz", rgb=rng.integers(0, 255, (12, 16, 16, 3)).astype(np.uint8),
             dem=rng.normal(0, 1, (12, 16, 16)).astype(np.float32))  # fmt: skip
    m = ChipStore(prepare_npz([tmp_path / "c.npz"], tmp_path / "st", PrepareConfig(chip_size=8)))
    assert m.manifest["pixel_size_m"] is None and m.manifest["vertical_crs"] == "unknown"


def test_manifest_is_strict_json_with_nan_statistics_as_null(files, monkeypatch):
    import demgen.data.prepare.fit as prepare_fit

    real_fit = prepare_fit.fit_normalizations

    def nan_fit(*args, **kwargs):
        norms = real_fit(*args, **kwargs)
        norms["elevation"]["nan_statistic"] = float("nan")
        norms["elevation"]["inf_statistic"] = float("inf")
        return norms

    monkeypatch.setattr(prepare_fit, "fit_normalizations", nan_fit)
    assert main(prep(files)) == 0
    m = _strict_loads((files / "store" / "manifest.json").read_text())
    assert m["normalization"]["elevation"]["nan_statistic"] is None
    assert m["normalization"]["elevation"]["inf_statistic"] is None
