"""The task registry: task names (what checkpoints record) -> classes, and checkpoint loading.

:func:`task_class` imports a task's module only when asked; :func:`load_task` reads a
checkpoint as data only (``weights_only=True``, through
:func:`demgen.io.checkpoint.read_checkpoint`) and builds the class that wrote it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from demgen.errors import CheckpointError, first_line

#: Task name -> "module:class". Names are what checkpoints record.
TASKS: dict[str, str] = {
    "regression": "demgen.tasks.regression:DEMRegressionTask",
    "pix2pix": "demgen.tasks.pix2pix:Pix2PixTask",
    "drpan": "demgen.tasks.drpan:DRPANTask",
    "refine": "demgen.tasks.refine:RefineTask",
    "dem2image": "demgen.tasks.dem2image:Dem2ImageTask",
    "dem2image_pix2pix": "demgen.tasks.dem2image_gan:Dem2ImagePix2PixTask",
    "temporal": "demgen.tasks.temporal:TemporalTask",
    "segment": "demgen.tasks.segment:SegmentTask",
    "image2dem_diffusion": "demgen.tasks.diffusion_tasks:Image2DemDiffusionTask",
    "dem2image_diffusion": "demgen.tasks.diffusion_tasks:Dem2ImageDiffusionTask",
    "temporal_diffusion": "demgen.tasks.diffusion_tasks:TemporalDiffusionTask",
}


def task_class(name: str) -> type:
    """The task class registered as ``name``; ValueError for an unknown name."""
    try:
        module, cls = TASKS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}") from None
    return getattr(importlib.import_module(module), cls)


def load_task(checkpoint: str | Path, device: str = "cpu") -> Any:
    """Load a task checkpoint as the class that wrote it (regression, pix2pix, drpan, ...).

    The class is picked by the task name saved in the checkpoint (checkpoints without
    one are regression). The file is read as data only (``weights_only=True``): a missing,
    corrupt or code-carrying file, or an unknown task, raises CheckpointError.
    """
    from demgen.io.checkpoint import read_checkpoint
    from demgen.tasks.common import checkpoint_task

    checkpoint = Path(checkpoint)
    name = checkpoint_task(read_checkpoint(checkpoint))
    try:
        cls = task_class(name)
    except ValueError as exc:
        raise CheckpointError(f"{checkpoint}: {exc}") from exc
    try:
        return cls.load_from_checkpoint(checkpoint, map_location=device, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{checkpoint}: not a readable demgen checkpoint ({first_line(exc)})"
        ) from exc


__all__ = ["TASKS", "load_task", "task_class"]
