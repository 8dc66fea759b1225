"""Training tasks: LightningModules whose constructor arguments are their configuration.

Every task writes its name into its checkpoints (see :mod:`demgen.tasks.common`);
:func:`task_class` maps that name back to the class, importing it only when asked.
"""

from __future__ import annotations

import importlib

#: Task name -> "module:class". Names are what checkpoints record.
TASKS: dict[str, str] = {
    "regression": "demgen.tasks.regression:DEMRegressionTask",
    "pix2pix": "demgen.tasks.pix2pix:Pix2PixTask",
    "drpan": "demgen.tasks.drpan:DRPANTask",
    "refine": "demgen.tasks.refine:RefineTask",
}


def task_class(name: str) -> type:
    """The task class registered as ``name``; ValueError for an unknown name."""
    try:
        module, cls = TASKS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}") from None
    return getattr(importlib.import_module(module), cls)


__all__ = ["TASKS", "task_class"]
