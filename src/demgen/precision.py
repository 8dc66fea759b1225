"""Choose numeric precision and memory format for the hardware, from measurements.

``auto`` means bf16 autocast where bf16 matrix arithmetic is actually faster than fp32:
CUDA GPUs with native bf16 (compute capability 8.0 or newer: Ampere and later; older GPUs
may report bf16 support through emulation, which is slower than fp32) and CPUs with AMX
tiles (bf16 matmul several times the fp32 rate).
A CPU with AVX-512 BF16 but no AMX only has ``vdpbf16ps`` dot products, which here run at
about half the fp32 FMA rate (bf16 matmul 150 vs fp32 310 GFLOP/s, every training step and
scene prediction slower in bf16; README "Performance"), so ``auto`` keeps fp32 there.
``bf16`` forces bf16 autocast anywhere; ``32`` forces fp32. channels_last is used in every
case: oneDNN's and cuDNN's NHWC convolutions are the fast ones.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used, so the CLI can read PRECISIONS cheaply
    import torch

PRECISIONS = ("auto", "bf16", "32")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when the CPU has any native bf16 arithmetic (AVX-512 BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_amx() -> bool:
    """True when the CPU exposes AMX bf16 tiles, the units that make bf16 fast on a CPU."""
    return {"amx_bf16", "amx_tile"} <= cpu_flags()


#: The first CUDA compute capability with bf16 tensor cores (Ampere, sm_80).
NATIVE_BF16_CAPABILITY = (8, 0)


def gpu_capability(device: str | None = None) -> tuple[int, int] | None:
    """CUDA compute capability ``(major, minor)`` of ``device`` (None without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = device.partition(":")[2] if device else ""
    major, minor = torch.cuda.get_device_capability(int(index) if index.isdigit() else None)
    return int(major), int(minor)


def gpu_has_native_bf16(device: str | None = None) -> bool:
    """True when the GPU computes in bf16 natively (compute capability 8.0 or newer).

    ``torch.cuda.is_bf16_supported()`` alone is not enough: it is also True on older GPUs
    (e.g. Turing, 7.5) where bf16 is emulated, and slower than fp32.
    """
    cap = gpu_capability(device)
    return cap is not None and cap >= NATIVE_BF16_CAPABILITY


def bf16_is_fast(device: str | None = None) -> bool:
    """Whether bf16 autocast speeds up convolutions on ``device`` (what ``auto`` follows)."""
    device = device or default_device()
    if device.startswith("cuda"):
        return gpu_has_native_bf16(device)
    return cpu_has_amx()


def precision_reason(device: str | None = None) -> str:
    """One line saying what ``auto`` picks on ``device`` and why (for logs)."""
    device = device or default_device()
    if device.startswith("cuda"):
        cap = gpu_capability(device)
        if cap is None:
            return "fp32: no GPU is visible"
        cc = f"compute capability {cap[0]}.{cap[1]}"
        if cap >= NATIVE_BF16_CAPABILITY:
            return f"bf16: the GPU ({cc}) has native bf16"
        return f"fp32: the GPU ({cc}) has no native bf16 (emulated bf16 is slower than fp32)"
    if cpu_has_amx():
        return "bf16: the CPU has AMX"
    if cpu_supports_bf16():
        return "fp32: the CPU has AVX-512 BF16 but no AMX, where bf16 is slower than fp32"
    return "fp32: the CPU has no bf16 arithmetic"


def resolve_precision(precision: str = "auto", device: str | None = None) -> str:
    """Map ``auto|bf16|32`` to a Lightning precision string for ``device`` (cpu or cuda).

    ``auto`` is ``bf16-mixed`` where :func:`bf16_is_fast` and ``32-true`` elsewhere;
    under autocast, reductions, every model's input conv and head, the losses and the
    metrics stay in fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "32":
        return "32-true"
    if precision == "bf16":
        return "bf16-mixed"
    return "bf16-mixed" if bf16_is_fast(device) else "32-true"


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_dtype(lightning_precision: str) -> torch.dtype | None:
    """The autocast dtype for a Lightning precision string (None for full fp32)."""
    import torch

    return torch.bfloat16 if lightning_precision.startswith("bf16") else None
