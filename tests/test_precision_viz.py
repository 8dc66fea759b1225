import numpy as np
import pytest

from demgen import precision
from demgen.viz.hillshade import hillshade


def test_precision_auto_follows_cpu_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "32-true"
    assert precision.resolve_precision("32", "cpu") == "32-true"
    assert precision.resolve_precision("bf16", "cpu") == "bf16-mixed"
    with pytest.raises(ValueError):
        precision.resolve_precision("fp16")


def _ramp(facing_east: bool, pixel: float = 10.0) -> np.ndarray:
    x = np.arange(32) * pixel
    z = (-x if facing_east else x) * 0.5  # 0.5 m per m, ~26.6 degrees
    return np.tile(z, (32, 1))


def test_hillshade_lit_side_brighter_and_uses_pixel_size():
    # Sun in the east: a slope descending to the east faces the sun.
    east = hillshade(_ramp(True), 10.0, azimuth=90, altitude=30)[5:-5, 5:-5].mean()
    west = hillshade(_ramp(False), 10.0, azimuth=90, altitude=30)[5:-5, 5:-5].mean()
    assert east > west
    flat_like = hillshade(_ramp(True), 1000.0, azimuth=90, altitude=30)[5:-5, 5:-5].mean()
    assert flat_like == pytest.approx(np.sin(np.radians(30)), abs=0.01)
    flat = hillshade(np.zeros((8, 8)), 10.0, altitude=45)
    np.testing.assert_allclose(flat, np.sin(np.radians(45)))
