"""Run folders: ``<run_root>/<name>/version_N/``, which rank writes them, and what a run
recorded (:func:`seen_chips`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

RUN_DIR_ENV = "DEMGEN_FIT_RUN_DIR"  # set by rank 0 so DDP child processes log to its folder


def version_dirs(folder: Path) -> list[tuple[int, Path]]:
    """``(N, folder/version_N)`` of every run folder under ``folder``, oldest first."""
    out = []
    for d in folder.glob("version_*") if folder.is_dir() else []:
        suffix = d.name.removeprefix("version_")
        if d.is_dir() and suffix.isdigit():
            out.append((int(suffix), d))
    return sorted(out)


def is_global_zero() -> bool:
    """Rank 0 before the trainer exists (torchrun sets RANK, SLURM SLURM_PROCID, Lightning's
    DDP launcher LOCAL_RANK and NODE_RANK in its child processes)."""
    keys = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")
    return all(os.environ.get(k, "0") == "0" for k in keys)


def seen_chips(run_dir: str | Path) -> dict[int, np.ndarray]:
    """``{rank: chip indices}`` recorded by :class:`SeenChips` in ``run_dir``."""
    out = {}
    for p in sorted(Path(run_dir).glob("seen_chips_rank*.csv")):
        rank = int(p.stem.removeprefix("seen_chips_rank"))
        out[rank] = np.loadtxt(p, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)[:, 1]
    return out
