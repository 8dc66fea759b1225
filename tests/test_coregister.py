"""Nuth & Kääb (2011) co-registration: a known shift is found, and evaluate removes it."""

import json
import subprocess
import sys

import numpy as np
import pytest
from rasterio.transform import from_origin

from demgen.errors import InputError
from demgen.evaluate import evaluate_dem, evaluate_to_folder
from demgen.io.raster import write_raster
from demgen.metrics.coregister import nuth_kaab, shift_bilinear

UTM = "EPSG:32633"
PX = 10.0


def hills(n=192, dx=0.0, dy=0.0):
    """Smooth hills facing every direction, at (x - dx, y - dy): the surface moved by
    (dx east, dy north) metres. Rows go south."""
    r, c = np.mgrid[0:n, 0:n].astype(float)
    x, y = c * PX - dx, -r * PX - dy
    return (
        400 + 60 * np.sin(x / 180.0) * np.cos(y / 250.0) + 35 * np.sin((x + y) / 120.0)
        + 25 * np.cos((x - 2 * y) / 300.0) + 15 * np.sin(x / 75.0 + 1.0) * np.sin(y / 95.0)
    )  # fmt: skip


def test_shift_bilinear():
    a = np.arange(20.0).reshape(4, 5)
    s = shift_bilinear(a, 1.0, 0.0)  # out[r, c] = a[r, c + 1]
    np.testing.assert_array_equal(s[:, :-1], a[:, 1:])
    assert np.isnan(s[:, -1]).all()
    h = shift_bilinear(a, 0.5, -1.0)
    assert h[1, 0] == pytest.approx(0.5 * (a[0, 0] + a[0, 1]))
    assert np.isnan(h[0]).all()


def test_known_shift_is_recovered():
    ref = hills()
    pred = hills(dx=2 * PX, dy=-1 * PX) + 5.0  # 2 px east, 1 px south, 5 m too high
    s = nuth_kaab(pred, ref, (PX, PX))
    assert s.dx_px == pytest.approx(2.0, abs=0.2) and s.dy_px == pytest.approx(-1.0, abs=0.2)
    assert s.dx_m == pytest.approx(20.0, abs=2.0) and s.dy_m == pytest.approx(-10.0, abs=2.0)
    assert s.dz_m == pytest.approx(5.0, abs=0.5)
    assert s.converged and 1 < s.iterations <= 15
    assert s.nmad_after_m < 0.05 * s.nmad_before_m
    # with unstable terrain masked out (and garbage there), the same answer
    stable = np.ones(ref.shape, bool)
    stable[:, :60] = False
    junk = pred.copy()
    junk[:, :50] += 80.0
    s2 = nuth_kaab(junk, ref, (PX, PX), stable)
    assert s2.dx_px == pytest.approx(2.0, abs=0.2) and s2.dy_px == pytest.approx(-1.0, abs=0.2)
    assert s2.dz_m == pytest.approx(5.0, abs=0.5)


def test_flat_terrain_is_refused():
    flat = np.full((64, 64), 100.0)
    with pytest.raises(InputError, match="co-registration"):
        nuth_kaab(flat + 1.0, flat, (PX, PX))


def test_evaluate_coregister_reports_and_removes_the_shift(tmp_path):
    tr = from_origin(500_000, 5_200_000, PX, PX)
    ref = write_raster(tmp_path / "ref.tif", hills().astype(np.float32), crs=UTM, transform=tr)
    moved = (hills(dx=2 * PX, dy=-1 * PX) + 5.0).astype(np.float32)
    pred = write_raster(tmp_path / "pred.tif", moved, crs=UTM, transform=tr)
    raw = evaluate_dem(pred, ref)
    assert "coregistration" not in raw and raw["mae_m"] > 5.0
    m = evaluate_to_folder(pred, ref, tmp_path / "ev", coregister=True)
    c = m["coregistration"]
    assert set(c) >= {"dx_m", "dy_m", "dz_m", "dx_px", "dy_px", "iterations"}
    assert c["dx_px"] == pytest.approx(2.0, abs=0.2) and c["dy_px"] == pytest.approx(-1.0, 0.2)
    assert c["dz_m"] == pytest.approx(5.0, abs=0.5)
    assert abs(m["bias_m"]) < 0.1 and m["mae_m"] < 0.1 * raw["mae_m"]
    assert m["n_pixels"] < raw["n_pixels"]  # the shifted edge has no prediction
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["coregistration"]["iterations"] == c["iterations"]
    assert "Co-registered (Nuth & Kääb, 2011)" in (tmp_path / "ev" / "report.md").read_text()
    r = subprocess.run([sys.executable, "-m", "demgen", "evaluate", str(pred), str(ref),
                        "--coregister", "--json", "-o", str(tmp_path / "ev2")],
                       capture_output=True, text=True, timeout=180)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["coregistration"]["dx_m"] == pytest.approx(c["dx_m"], abs=1e-9)
