"""Choose numeric precision for the hardware: bf16 autocast + channels_last where it pays."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "32")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), read from cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str = "auto", device: str | None = None) -> str:
    """Map ``auto|bf16|32`` to a Lightning precision string for ``device`` (cpu or cuda).

    ``auto`` is ``bf16-mixed`` on CUDA GPUs with bf16 and on CPUs with native bf16,
    and ``32-true`` elsewhere; autocast keeps reductions and the model head in fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "32":
        return "32-true"
    if precision == "bf16":
        return "bf16-mixed"
    device = device or default_device()
    if device.startswith("cuda"):
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    else:
        ok = cpu_supports_bf16()
    return "bf16-mixed" if ok else "32-true"


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_dtype(lightning_precision: str) -> torch.dtype | None:
    """The autocast dtype for a Lightning precision string (None for full fp32)."""
    return torch.bfloat16 if lightning_precision.startswith("bf16") else None
