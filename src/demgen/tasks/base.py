"""What every demgen LightningModule shares, whatever it reads and writes.

:class:`ContractTask` is the plumbing of the task contract (:mod:`demgen.tasks.spec`) that
does not depend on units: the task name recorded in every checkpoint (:data:`TASK_KEY`,
read back by :func:`checkpoint_task` to pick the class), channels-last networks and
inputs, the window multiple of the generator. Image -> heights tasks build on it through
:class:`demgen.tasks.common.DEMTask`; heights -> image tasks through
:class:`demgen.tasks.dem2image.Dem2ImageTask`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

#: Checkpoint key that names the task class that wrote it (see :func:`checkpoint_task`).
TASK_KEY = "demgen_task"


def size_multiple_of(model: nn.Module) -> int:
    """Input side multiple a model needs: its ``size_multiple``, else ``2**depth``, else 1."""
    m = getattr(model, "size_multiple", None)
    if m is not None:
        return int(m)
    depth = getattr(model, "depth", None)
    return 2 ** int(depth) if depth is not None else 1


def checkpoint_task(checkpoint: dict[str, Any]) -> str:
    """The task name a loaded checkpoint dict was written by (``regression`` for
    checkpoints older than the task key)."""
    if checkpoint.get(TASK_KEY):
        return str(checkpoint[TASK_KEY])
    hp = checkpoint.get("hyper_parameters") or {}
    return str(hp.get("task", "regression"))


class ContractTask(L.LightningModule):
    """Base of every demgen task: ``self.model`` is the generator; the task's name goes into
    every checkpoint; networks and inputs run channels-last when asked."""

    #: Name of the task, saved in checkpoints and used to pick the class when loading.
    task_name: ClassVar[str] = ""
    #: whether the networks and their inputs are channels_last (see set_channels_last)
    _channels_last: bool = False

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return size_multiple_of(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The generator on the network input ``x`` (B, C, H, W) (see the task's ``encode``)."""
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def set_channels_last(self, enabled: bool = True) -> None:
        """Put every network (generator, discriminators) and, in forward, every input in
        channels_last memory format (NHWC: oneDNN's and cuDNN's fast convolutions), or back."""
        self._channels_last = enabled
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def on_fit_start(self) -> None:
        self.set_channels_last(bool(self.hparams.get("channels_last", True)))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TASK_KEY] = self.task_name


__all__ = ["TASK_KEY", "ContractTask", "checkpoint_task", "size_multiple_of"]
