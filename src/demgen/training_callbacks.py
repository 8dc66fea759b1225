"""The callbacks and loggers ``demgen fit`` adds to Lightning (see :mod:`demgen.training`).

- :class:`RNGState`: the global random generators in every checkpoint, so a resumed run draws
  the same shuffles and augmentations as an uninterrupted one;
- :class:`CheckpointInfo`: ``checkpoint["demgen"]`` (task class, bands, normalization, chip
  size, store) for prediction and export;
- :class:`SeenChips`: which chips each rank trained on (DDP evidence);
- :class:`RunCSVLogger` and :func:`trim_metrics`: a resumed run continues its ``metrics.csv``.

Kept apart from :mod:`demgen.training` (which re-exports them) so the CLI module stays short.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from demgen import __version__

# --- callbacks ------------------------------------------------------------------------------


class RNGState(Callback):
    """Save the torch/numpy/python random generators in checkpoints and restore them on resume.

    Lightning restores weights, optimizers, schedulers and loop counters but not the global
    generators, which draw the training shuffle (``RandomSampler``), the augmentations and
    dropout; restoring them makes a resumed run continue exactly like an uninterrupted one.
    """

    def state_dict(self) -> dict[str, Any]:
        # plain lists and tensors only, so checkpoints stay loadable with weights_only=True
        kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (what seed_everything seeds)
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "python": _to_lists(random.getstate()),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "torch" not in state_dict:
            return
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state(  # noqa: NPY002
            (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss)
        )
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _to_lists(state: tuple) -> list:
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


class CheckpointInfo(Callback):
    """Write ``checkpoint["demgen"]``: what prediction needs besides the task's hyperparameters
    (task class, band names, normalization, chip size, store, demgen version)."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        cls = type(pl_module)
        info: dict[str, Any] = {
            "task": f"{cls.__module__}.{cls.__qualname__}",
            "demgen_version": __version__,
        }
        hp = pl_module.hparams
        if "image_norm" in hp:
            info["bands"] = list(hp["image_norm"].get("bands", []))
            info["normalization"] = {"image": hp["image_norm"], "elevation": hp["elevation_norm"]}
        if "chip_size" in hp:
            info["chip_size"] = hp["chip_size"]
        dm = getattr(trainer, "datamodule", None)
        store = getattr(dm, "store", None)
        if store is not None:
            info["store"] = str(getattr(dm, "store_path", ""))
            info["store_chip_size"] = store.manifest.get("chip_size")
            info["bands"] = list(store.bands)
        checkpoint["demgen"] = info


class SeenChips(Callback):
    """Record which chips (``batch["index"]``) each rank trains on, per epoch, as
    ``seen_chips_rank<R>.csv`` in the run folder: evidence that DDP ranks see disjoint data."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int]] = []
        self.folder: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.folder = trainer.log_dir  # collective: every rank calls setup

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if isinstance(batch, dict) and "index" in batch:
            self.rows += [(trainer.current_epoch, int(i)) for i in batch["index"].tolist()]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.folder is None:
            return
        path = Path(self.folder) / f"seen_chips_rank{trainer.global_rank}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", "index"])
            w.writerows(self.rows)


# --- loggers --------------------------------------------------------------------------------


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued (resume)
    instead of deleted."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """CSVLogger that appends to the run's ``metrics.csv`` when a run is resumed."""

    @property
    def experiment(self) -> Any:
        if self._experiment is None and pl.utilities.rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment


def trim_metrics(csv_path: Path, epoch: int, step: int) -> None:
    """Drop rows of ``metrics.csv`` logged after a checkpoint (epoch ``epoch``, ``step``), so
    a resumed run's file reads like an uninterrupted one's."""
    if not csv_path.is_file():
        return
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames or [], list(reader)

    def keep(row: dict[str, str]) -> bool:
        if row.get("epoch") not in (None, ""):
            return int(float(row["epoch"])) <= epoch
        return row.get("step") in (None, "") or int(float(row["step"])) < step

    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(r for r in rows if keep(r))


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            return False
    return True
