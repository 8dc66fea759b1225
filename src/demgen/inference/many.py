"""Predict many scenes, resumably, as one of several ranks (``torchrun``, ``srun``).

:func:`predict_many` predicts this rank's shard of the scenes (:mod:`demgen.inference.ranks`)
on its device with :func:`~demgen.inference.scene.predict_scene`. A scene whose outputs all
exist is skipped unless ``overwrite``; a scene that fails is reported in one line naming its
input and the rank goes on with the others. Every output appears only when complete (written
under a temporary name and renamed), so a killed rank leaves no partial file under a final
name, and a rerun predicts exactly the scenes without complete outputs; the temporary files
a killed rank left beside an output are removed before that output is predicted again.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from demgen.errors import DemgenError, first_line
from demgen.inference.ranks import rank_device, shard, world
from demgen.inference.scene import output_files, predict_scene

__all__ = ["Summary", "complete", "predict_many"]


@dataclass
class Summary:
    """What one rank did: outputs predicted and skipped, inputs failed with their reason."""

    rank: int = 0
    world_size: int = 1
    predicted: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def line(self) -> str:
        return (f"rank {self.rank}/{self.world_size}: predicted {len(self.predicted)}, "
                f"skipped {len(self.skipped)}, failed {len(self.failed)}")  # fmt: skip


def complete(spec, output: str | Path) -> bool:
    """True when every output file of the scene written to ``output`` exists (files appear
    only when complete, so existing means finished)."""
    return all(p.exists() for p in output_files(spec, output).values())


def _remove_partials(final: Path) -> None:
    """Delete the temporary files a killed writer of ``final`` left beside it
    (``.NAME.<id>.tmp.tif``, the COG stage ``.NAME.stage.tif`` and its own temporaries)."""
    if final.parent.is_dir():
        for pattern in (f".{final.name}.*", f"..{final.name}.*"):
            for stale in final.parent.glob(pattern):
                stale.unlink(missing_ok=True)


def _reason(src: Path, exc: Exception) -> str:
    """One line naming ``src``: the message of a user-fixable error, else its type too."""
    internal = not isinstance(exc, DemgenError | OSError)
    text = f"{type(exc).__name__}: {first_line(exc)}" if internal else first_line(exc)
    return text if str(src) in text else f"{src}: {text}"


def predict_many(
    task,
    jobs: Sequence[Mapping[str, str | Path]],
    outputs: Sequence[str | Path],
    *,
    overwrite: bool = False,
    ranks: tuple[int, int, int] | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    **predict_kwargs,
) -> Summary:
    """Predict this rank's share of the scenes ``jobs`` (each ``{input name: path}``) into
    ``outputs`` (one per job, as :func:`~demgen.inference.scene.predict_scene` takes it).

    ``ranks`` is ``(rank, world_size, local_rank)``, from the environment by default
    (:func:`~demgen.inference.ranks.world`); the scenes are dealt round-robin in the sorted
    order of their first input. ``device`` defaults to the rank's GPU under a launcher
    (:func:`~demgen.inference.ranks.rank_device`) and to ``predict_scene``'s default for one
    process. Scenes already complete (:func:`complete`) are skipped unless ``overwrite``. A
    failing scene (unreadable input, no valid pixel, out of memory, ...) is reported through
    ``warn`` (stderr by default) and the others go on; ``DEMGEN_DEBUG`` re-raises errors that
    are not the user's. ``log`` gets a line per scene and the summary line; the summary is
    returned. ``predict_kwargs`` go to ``predict_scene``.
    """
    if len(jobs) != len(outputs):
        raise ValueError(f"{len(jobs)} scenes but {len(outputs)} outputs")
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    rank, size, local = world() if ranks is None else ranks
    if device is None and size > 1:
        device = rank_device(local)
    if device and device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(device)  # nothing of this rank lands on another rank's GPU
    spec = task.spec
    first = spec.inputs[0].name
    pairs = [({n: Path(p) for n, p in job.items()}, Path(out))
             for job, out in zip(jobs, outputs, strict=True)]  # fmt: skip
    summary = Summary(rank, size)
    for job, dst in shard(pairs, rank, size, key=lambda pair: str(pair[0][first])):
        src = job[first]
        if not overwrite and complete(spec, dst):
            summary.skipped.append(dst)
            log(f"skipped {dst} (exists; --overwrite replaces it)")
            continue
        t0 = time.time()
        try:
            for final in output_files(spec, dst).values():
                _remove_partials(final)
            predict_scene(task, job, dst, device=device, **predict_kwargs)
        except (DemgenError, OSError) as exc:
            summary.failed.append((src, _reason(src, exc)))
        except Exception as exc:
            if os.environ.get("DEMGEN_DEBUG"):
                raise
            summary.failed.append((src, _reason(src, exc)))
        else:
            summary.predicted.append(dst)
            written = ", ".join(str(p) for p in output_files(spec, dst).values())
            log(f"wrote {written} ({time.time() - t0:.1f} s)")
            continue
        warn(summary.failed[-1][1])
    log(summary.line())
    return summary
