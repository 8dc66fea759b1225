"""Which share of many scenes this process predicts, and on which device.

``demgen predict`` over many scenes started by a launcher (``torchrun``, ``srun``, Lightning's
launcher) runs as several processes, the ranks. Each reads its rank from the environment the
launcher sets (:func:`world`), takes every ``world_size``-th scene of the sorted list
(:func:`shard`) and predicts them on its own device (:func:`rank_device`).

No process group is made and nothing is exchanged between ranks: scenes are independent,
there is no collective to compute, and each rank only writes its own outputs (the shards are
disjoint), so the ranks need not even meet. That is what keeps a failing rank harmless: there
is no barrier for the others to hang in, the outputs it finished stay (each appears only when
complete), and a rerun, which skips completed outputs, predicts only the missing ones.
(torchrun itself stops every rank once one exits non-zero, as a rank with a failed scene does
when its shard is done: what the others finished by then stays, and the rerun does the rest.)
A process group a launcher may have initialised is left alone; its rank and size are used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from demgen.errors import DemgenError

T = TypeVar("T")

__all__ = ["rank_device", "shard", "world"]


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        msg = f"{name}={env[name]!r} in the environment is not a whole number"
        raise DemgenError(msg) from None


def _checked(rank: int, world_size: int, local_rank: int, source: str) -> tuple[int, int, int]:
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise DemgenError(
            f"inconsistent {source} ranks in the environment: rank {rank}, world size "
            f"{world_size}, local rank {local_rank}"
        )
    return rank, world_size, local_rank


def world(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` of this process from its launcher's environment.

    torchrun (and Lightning's launcher): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; Lightning
    sets no ``RANK`` for the processes it starts, so without one the rank is ``NODE_RANK *
    LOCAL_WORLD_SIZE + LOCAL_RANK`` (``LOCAL_RANK`` on node 0). Else SLURM tasks started by
    ``srun``: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (the step's tasks; else
    ``SLURM_NTASKS``), ``SLURM_LOCALID``. Else one process: ``(0, 1, 0)``. A torch.distributed
    process group already initialised (by a launcher or the caller) gives rank and world size.
    """
    env = os.environ if env is None else env
    dist = _initialised_group()
    if dist is not None:
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        return _checked(dist[0], dist[1], local, "torch.distributed")
    if "WORLD_SIZE" in env:
        size = _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        if "RANK" in env:
            rank = _int(env, "RANK")
        elif "LOCAL_WORLD_SIZE" in env and ("NODE_RANK" in env or "GROUP_RANK" in env):
            node = _int(env, "NODE_RANK" if "NODE_RANK" in env else "GROUP_RANK")
            rank = node * _int(env, "LOCAL_WORLD_SIZE") + local
        elif env.get("NODE_RANK", "0") == "0":
            rank = local
        else:
            raise DemgenError("WORLD_SIZE and NODE_RANK are set but neither RANK nor "
                              "LOCAL_WORLD_SIZE: cannot tell this process's rank")  # fmt: skip
        return _checked(rank, size, local, "torchrun")
    if "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        tasks = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        size = _int(env, tasks)
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        return _checked(_int(env, "SLURM_PROCID"), size, local, "SLURM")
    return 0, 1, 0


def _initialised_group() -> tuple[int, int] | None:
    """(rank, world size) of an initialised default process group, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def shard(
    items: Iterable[T], rank: int, world_size: int, key: Callable[[T], Any] | None = None
) -> list[T]:
    """The items of ``rank`` out of ``world_size``: every ``world_size``-th of the items
    sorted (by ``key``, else themselves), starting at the ``rank``-th. Deterministic whatever
    order each rank listed them in; across ranks every item is taken exactly once."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return sorted(items, key=key)[rank::world_size]


def rank_device(local_rank: int) -> str:
    """The device of the process with ``local_rank`` on its machine: ``cuda:<local_rank>``
    when CUDA sees that many GPUs; where it sees fewer (``srun --gpus-per-task=1`` shows each
    task only its own GPU, as ``cuda:0``), ``cuda:<local_rank mod count>``; ``cpu`` without
    CUDA."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    count = torch.cuda.device_count()
    return f"cuda:{local_rank if local_rank < count else local_rank % count}"
