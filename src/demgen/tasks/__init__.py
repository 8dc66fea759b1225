"""Training tasks: LightningModules whose constructor arguments are their configuration.

Every task writes its name into its checkpoints (see :mod:`demgen.tasks.common`);
:mod:`demgen.tasks.registry` maps that name back to the class (:func:`task_class`, importing
it only when asked) and loads checkpoints (:func:`load_task`). Every task declares what it
reads and writes (:mod:`demgen.tasks.spec`: ``task.spec`` and ``task.predict_batch``).
"""

from __future__ import annotations

from demgen.tasks.registry import TASKS, load_task, task_class
from demgen.tasks.spec import LayerSpec, TaskSpec

__all__ = ["TASKS", "LayerSpec", "TaskSpec", "load_task", "task_class"]
