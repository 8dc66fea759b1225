import numpy as np
import pytest
import torch

from demgen import precision
from demgen.viz.hillshade import hillshade

AMX_CPU = frozenset({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})
AVX512_BF16_CPU = frozenset({"avx512f", "avx512_bf16", "avx512_fp16"})
PLAIN_CPU = frozenset({"avx2", "fma"})


def _with_flags(monkeypatch, flags):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)


def test_precision_auto_picks_bf16_on_a_bf16_capable_cpu(monkeypatch):
    _with_flags(monkeypatch, AMX_CPU)
    assert precision.resolve_precision("auto", "cpu") == "bf16-mixed"
    assert precision.autocast_dtype(precision.resolve_precision("auto", "cpu")) is torch.bfloat16
    assert "AMX" in precision.precision_reason("cpu")


def test_precision_auto_picks_fp32_where_bf16_is_unavailable_or_slow(monkeypatch):
    _with_flags(monkeypatch, PLAIN_CPU)
    assert not precision.cpu_supports_bf16()
    assert precision.resolve_precision("auto", "cpu") == "32-true"
    assert precision.autocast_dtype("32-true") is None
    assert "no bf16" in precision.precision_reason("cpu")
    # AVX-512 BF16 without AMX: bf16 matmul runs at half the fp32 rate there (measured)
    _with_flags(monkeypatch, AVX512_BF16_CPU)
    assert precision.cpu_supports_bf16() and not precision.cpu_has_amx()
    assert precision.resolve_precision("auto", "cpu") == "32-true"
    assert "no AMX" in precision.precision_reason("cpu")


def test_precision_forced_and_cuda(monkeypatch):
    _with_flags(monkeypatch, PLAIN_CPU)
    assert precision.resolve_precision("32", "cpu") == "32-true"
    assert precision.resolve_precision("bf16", "cpu") == "bf16-mixed"
    with pytest.raises(ValueError):
        precision.resolve_precision("fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0))
    assert precision.resolve_precision("auto", "cuda") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (6, 1))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.resolve_precision("auto", "cuda") == "32-true"
    assert precision.resolve_precision("32", "cuda") == "32-true"


@pytest.mark.parametrize(
    ("capability", "want", "reason"),
    [
        ((7, 5), "32-true", "fp32: the GPU (compute capability 7.5) has no native bf16"),
        ((7, 0), "32-true", "fp32: the GPU (compute capability 7.0) has no native bf16"),
        ((8, 0), "bf16-mixed", "bf16: the GPU (compute capability 8.0) has native bf16"),
        ((9, 0), "bf16-mixed", "bf16: the GPU (compute capability 9.0) has native bf16"),
    ],
)
def test_precision_auto_needs_native_gpu_bf16(monkeypatch, capability, want, reason):
    """is_bf16_supported() is True on pre-Ampere GPUs through (slow) emulation: auto goes
    by the compute capability instead, and says so."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert precision.resolve_precision("auto", "cuda") == want
    assert precision.resolve_precision("auto", "cuda:0") == want
    assert precision.precision_reason("cuda").startswith(reason)
    assert precision.resolve_precision("bf16", "cuda") == "bf16-mixed"  # forcing still works


def test_cpu_flags_reads_this_machine():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:  # Linux: the flags line of /proc/cpuinfo
        assert "fpu" in flags or "neon" in flags or "fp" in flags


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
