"""Training from YAML configs: ``demgen fit`` is :func:`fit` is Lightning's ``LightningCLI``.

A config names a task class (any :mod:`demgen.tasks` LightningModule, ``class_path`` +
``init_args``) and a data module (:class:`~demgen.data.datamodule.ChipDataModule` over a chip
store, or :class:`~demgen.data.synth_datamodule.SynthWorldDataModule`, which makes its own),
plus any ``trainer`` options; every key can be overridden on the command line
(``--trainer.max_epochs 5 --data.store chips/ --model.init_args.lr 1e-3``)::

    from demgen.training import fit
    run_dir = fit(["--config", "configs/quick.yaml", "--trainer.max_epochs", "3"])

What ``fit`` adds to plain LightningCLI, so every run is comparable and resumable:

- the data module's normalization dicts are linked into the task's ``image_norm`` and
  ``elevation_norm`` when both are built, so configs never hard-code statistics; so are the
  store's chip size, pixel size in metres (:func:`store_pixel_size`: what ``demgen predict``
  checks an image's resolution against; None, no check, for ungeoreferenced ``.npz``
  stores) and vertical datum (:func:`store_vertical_crs`), and a refinement task's layers;
- callbacks (:mod:`demgen.training_callbacks`): ModelCheckpoint (``best.ckpt`` on the lowest
  ``val_mae_m``, or the task's ``monitor``, e.g. ``val_mae_rel_m`` for relative models, and
  ``last.ckpt``), EarlyStopping on the same metric, LearningRateMonitor (each configurable as
  ``--checkpoint.*``, ``--early_stopping.*``, ``--lr_monitor.*``), :class:`RNGState` (the
  random generators are saved in checkpoints so a resumed run draws the same shuffles and
  augmentations as an uninterrupted one) and :class:`CheckpointInfo` (task class, bands,
  normalization, chip size in every checkpoint);
- loggers: CSV and TensorBoard (when installed) in one predictable run folder
  ``<run_root>/<config name>/version_N/`` (``metrics.csv``, ``config.yaml``, ``tensorboard/``,
  ``checkpoints/``), plus ``learning_curves.png`` at the end;
- ``--ckpt_path last`` resumes the newest run of that config that has a ``last.ckpt``, in the
  same folder, appending to its ``metrics.csv``;
- ``--precision auto|bf16|32`` (:func:`demgen.precision.resolve_precision`; default ``auto``)
  sets ``--trainer.precision``; channels_last is the tasks' default memory format.

Scale-out is Lightning's own: ``--trainer.strategy ddp --trainer.devices N`` (and
``--trainer.num_nodes`` under torchrun or SLURM).
"""

from demgen.training.cli import DESCRIPTION, MONITOR, DemgenCLI, build_cli, first_line, fit
from demgen.training.links import store_pixel_size, store_vertical_crs
from demgen.training.runs import RUN_DIR_ENV, seen_chips
from demgen.training_callbacks import (
    CheckpointInfo,
    RNGState,
    RunCSVLogger,
    SeenChips,
    trim_metrics,
)

__all__ = [
    "DESCRIPTION",
    "MONITOR",
    "RUN_DIR_ENV",
    "CheckpointInfo",
    "DemgenCLI",
    "RNGState",
    "RunCSVLogger",
    "SeenChips",
    "build_cli",
    "first_line",
    "fit",
    "seen_chips",
    "store_pixel_size",
    "store_vertical_crs",
    "trim_metrics",
]
