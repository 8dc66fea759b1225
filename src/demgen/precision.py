"""Choose numeric precision and memory format for the hardware, from measurements.

``auto`` means bf16 autocast where bf16 matrix arithmetic is actually faster than fp32:
CUDA GPUs with bf16 and CPUs with AMX tiles (bf16 matmul several times the fp32 rate).
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


def bf16_is_fast(device: str | None = None) -> bool:
    """Whether bf16 autocast speeds up convolutions on ``device`` (what ``auto`` follows)."""
    device = device or default_device()
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_amx()


def precision_reason(device: str | None = None) -> str:
    """One line saying what ``auto`` picks on ``device`` and why (for logs)."""
    device = device or default_device()
    if device.startswith("cuda"):
        ok = bf16_is_fast(device)
        return "bf16: the GPU supports bf16" if ok else "fp32: the GPU has no bf16"
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
