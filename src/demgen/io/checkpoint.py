"""Read a checkpoint as data: tensors, dicts, lists, numbers and strings, never code.

``torch.load`` unpickles; with ``weights_only=False`` a crafted ``.ckpt`` runs any
command it names the moment it is read. Every checkpoint demgen reads goes through
:func:`read_checkpoint` (``weights_only=True``: PyTorch's restricted unpickler, which
refuses every global outside its allow-list of tensor and container types), and what
demgen writes into a checkpoint is plain data, so nothing is lost by the restriction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from demgen.errors import CheckpointError, first_line


def read_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, loaded with ``weights_only=True``.

    Raises CheckpointError (one line, naming the file) when the file is missing, damaged,
    or holds anything but plain data (a pickled object or callable is refused unrun).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch words every refusal "Weights only load failed"; a refused object names the
        # GLOBAL (class or callable) it would have imported, a damaged file does not.
        found = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln]
        if not found:
            raise CheckpointError(
                f"{path}: not a readable demgen checkpoint (not a PyTorch file, or damaged)"
            ) from exc
        raise CheckpointError(
            f"{path}: refused: the checkpoint holds objects other than plain data (tensors, "
            f"dicts, lists, numbers, strings), which could run code when loaded ({found[0]})"
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path}: not a readable demgen checkpoint ({first_line(exc)})"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a demgen checkpoint (holds {type(state).__name__})")
    return state
