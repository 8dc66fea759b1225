"""``demgen fit``: LightningCLI with demgen's defaults (links, callbacks, run folder, loggers,
resume); the package docstring (:mod:`demgen.training`) says what each adds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from demgen.errors import InputError
from demgen.io.checkpoint import read_checkpoint
from demgen.precision import precision_reason, resolve_precision
from demgen.training.links import (
    chip_size_of,
    extras_of,
    input_norms_of,
    normalization_of,
    store_image_dtype,
    store_pixel_size,
    store_vertical_crs,
)
from demgen.training.runs import RUN_DIR_ENV, is_global_zero, version_dirs
from demgen.training_callbacks import (
    CheckpointInfo,
    RNGState,
    RunCSVLogger,
    _tensorboard_available,
    trim_metrics,
)

MONITOR = "val_mae_m"

DESCRIPTION = """\
Train a demgen task from a LightningCLI YAML config (see configs/ and README "Training").

  demgen fit --config configs/quick.yaml
  demgen fit --config configs/sat2dem_unet.yaml --data.store chips/ --trainer.max_epochs 50
  demgen fit --config configs/quick.yaml --ckpt_path last          # resume the newest run
  demgen fit --config configs/quick.yaml --trainer.strategy ddp --trainer.devices 2

The run goes to RUN_ROOT/CONFIG_NAME/version_N/ (printed): metrics.csv, config.yaml,
tensorboard/, checkpoints/best.ckpt and last.ckpt, learning_curves.png.
"""


class DemgenCLI(LightningCLI):
    """LightningCLI with demgen's defaults: links, callbacks, run folder, loggers, resume."""

    run_dir: Path | None = None  # decided before instantiation; logged to when own_loggers
    ckpt_path: str | None = None
    own_loggers: bool = False

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_root", type=str, default="runs", help="Folder holding run folders."
        )
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Run folder name (default: the config file's stem, else 'fit').",
        )
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Resume from this checkpoint, or 'last': the newest last.ckpt of this run name.",
        )
        parser.add_argument(
            "--precision",
            type=Literal["auto", "bf16", "32"] | None,
            default=None,
            help="auto (default): bf16 autocast where it is faster than fp32 (GPUs with bf16, "
            "CPUs with AMX), else fp32; bf16 or 32 force one. Sets --trainer.precision.",
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": MONITOR,
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True,
                "checkpoint.filename": "best",
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {"early_stopping.monitor": MONITOR, "early_stopping.mode": "min",
             "early_stopping.patience": 10}
        )  # fmt: skip
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        for key in ("image_norm", "elevation_norm"):
            parser.link_arguments(
                "data",
                f"model.init_args.{key}",
                compute_fn=normalization_of(key.removesuffix("_norm")),
                apply_on="instantiate",
            )
        parser.link_arguments(
            "data", "model.init_args.chip_size", compute_fn=chip_size_of, apply_on="instantiate"
        )
        # what prediction checks an input against: the resolution and vertical datum trained on
        parser.link_arguments(
            "data", "model.init_args.pixel_size", compute_fn=store_pixel_size,
            apply_on="instantiate",
        )  # fmt: skip
        parser.link_arguments(
            "data", "model.init_args.vertical_crs", compute_fn=store_vertical_crs,
            apply_on="instantiate",
        )  # fmt: skip
        # refinement tasks (RefineTask) also take the store's extra layers and their norms;
        # jsonargparse skips a link whose target the chosen task class does not have
        parser.link_arguments(
            "data", "model.init_args.extras", compute_fn=extras_of, apply_on="instantiate"
        )
        # image-output tasks (DEM -> image) write predictions in the store's image dtype
        parser.link_arguments(
            "data", "model.init_args.image_dtype", compute_fn=store_image_dtype,
            apply_on="instantiate",
        )  # fmt: skip
        parser.link_arguments(
            "data", "model.init_args.input_norms", compute_fn=input_norms_of, apply_on="instantiate"
        )

    # the run folder is decided after parsing and before anything is built -------------------

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        if cfg.get("precision"):
            cfg.trainer.precision = resolve_precision(cfg.precision)
        self.ckpt_path = cfg.get("ckpt_path")
        if os.environ.get(RUN_DIR_ENV):
            self.run_dir = Path(os.environ[RUN_DIR_ENV])
            if self.ckpt_path == "last":
                self.ckpt_path = str(self.run_dir / "checkpoints" / "last.ckpt")
            return
        name = cfg.get("run_name")
        if not name:
            configs = cfg.get("config") or []
            name = Path(os.fspath(configs[-1])).stem if configs else "fit"
        root = Path(cfg.get("run_root") or "runs") / name
        versions = version_dirs(root)
        if self.ckpt_path == "last":
            found = [d for _, d in versions if (d / "checkpoints" / "last.ckpt").is_file()]
            if not found:
                raise InputError(f"--ckpt_path last: no {root}/version_*/checkpoints/last.ckpt")
            self.run_dir = found[-1]
            self.ckpt_path = str(self.run_dir / "checkpoints" / "last.ckpt")
        elif self.ckpt_path:
            ckpt = Path(self.ckpt_path)
            if not ckpt.is_file():
                raise InputError(f"--ckpt_path {ckpt}: no such checkpoint")
            # a checkpoint of a demgen run continues in that run's folder
            run = ckpt.resolve().parent.parent
            same_run = ckpt.resolve().parent.name == "checkpoints" and run.name.startswith(
                "version_"
            )
            self.run_dir = (
                run if same_run else root / f"version_{versions[-1][0] + 1 if versions else 0}"
            )
        else:
            self.run_dir = root / f"version_{versions[-1][0] + 1 if versions else 0}"
        if self.ckpt_path and is_global_zero():
            state = read_checkpoint(self.ckpt_path)  # data only: never runs pickled code
            trim_metrics(
                self.run_dir / "metrics.csv", int(state["epoch"]), int(state["global_step"])
            )
        os.environ[RUN_DIR_ENV] = str(self.run_dir)  # inherited by Lightning's DDP children

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        if trainer_cfg.get("logger") in (None, True) and self.run_dir is not None:
            save_dir, name, version = (
                self.run_dir.parent.parent,
                self.run_dir.parent.name,
                self.run_dir.name,
            )
            loggers: list[Any] = [RunCSVLogger(save_dir, name=name, version=version)]
            if _tensorboard_available():
                from lightning.pytorch.loggers import TensorBoardLogger

                loggers.append(
                    TensorBoardLogger(
                        save_dir, name=name, version=version, sub_dir="tensorboard",
                        default_hp_metric=False,
                    )
                )  # fmt: skip
            kwargs["logger"] = loggers
            self.own_loggers = True
        if trainer_cfg.get("fast_dev_run"):
            # Lightning's ModelCheckpoint still writes last.ckpt at train end under fast_dev_run
            ckpt = self._get(self.config_init, "checkpoint")
            if ckpt is not None:
                ckpt.save_last = False
        # a relative (per-chip offset) model logs val_mae_rel_m instead of val_mae_m: its
        # checkpoint and early stopping follow the metric the task names, unless set by hand
        monitor = getattr(getattr(self, "model", None), "monitor", MONITOR)
        for key in ("checkpoint", "early_stopping"):
            cb = self._get(self.config_init, key)
            if cb is not None and getattr(cb, "monitor", None) == MONITOR:
                cb.monitor = monitor
        callbacks = list(trainer_cfg.get("callbacks") or [])
        callbacks += [RNGState(), CheckpointInfo()]
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)


def build_cli(args: Sequence[str]) -> DemgenCLI:
    """Parse ``args`` (``demgen fit`` arguments) and build the task, data and trainer."""
    warnings.filterwarnings("ignore", ".*LightningCLI's args parameter is intended.*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is not supported by the model summary.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*", FutureWarning)
    return DemgenCLI(
        model_class=pl.LightningModule,
        datamodule_class=pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults={
            "precision": resolve_precision("auto"),
            "max_epochs": 100,
            "log_every_n_steps": 10,
        },
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "prog": "demgen fit",
            "description": DESCRIPTION,
            "exit_on_error": False,
            "default_env": False,
        },
        args=list(args),
        run=False,
    )


def fit(args: Sequence[str], *, log: Callable[[str], None] | None = print) -> Path | None:
    """Train as ``demgen fit ARGS`` does; return the run folder (None on non-zero ranks or
    without a run folder). Checkpoints are in ``<run folder>/checkpoints``."""
    inherited = RUN_DIR_ENV in os.environ  # a DDP child process of an earlier fit()
    try:
        return _fit(args, log)
    finally:
        if not inherited:
            os.environ.pop(RUN_DIR_ENV, None)


def _fit(args: Sequence[str], log: Callable[[str], None] | None) -> Path | None:
    try:
        cli = build_cli(args)
    except ValueError as exc:  # a constructor's error, wrapped by jsonargparse's Union check
        if "Union subtypes" not in str(exc):
            raise
        errors = [ln.strip()[2:] for ln in str(exc).splitlines() if ln.strip().startswith("- ")]
        raise InputError(errors[0] if errors else first_line(exc)) from exc
    trainer = cli.trainer
    if trainer.is_global_zero and log and cli.own_loggers and not trainer.fast_dev_run:
        log(f"[demgen fit] run folder {cli.run_dir}")
        log(f"[demgen fit] precision {trainer.precision} ({precision_reason()} for auto)")
    if cli.ckpt_path:
        read_checkpoint(cli.ckpt_path)  # every rank refuses a code-carrying file unrun
    trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.ckpt_path, weights_only=True)
    # trainer.log_dir would broadcast, and the other ranks may have left already
    if not trainer.is_global_zero or trainer.fast_dev_run or not trainer.loggers:
        return None
    run_dir = Path(trainer.loggers[0].log_dir)
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        from demgen.viz.figures import learning_curves

        with contextlib.suppress(ValueError):  # no metrics logged yet
            learning_curves(metrics, run_dir / "learning_curves.png", title=run_dir.parent.name)
    ckpt = trainer.checkpoint_callback
    if log and ckpt is not None:
        best = ckpt.best_model_score
        unit = " m" if str(ckpt.monitor).endswith("_m") else ""  # val_l1_refl is reflectance
        score = f", best {ckpt.monitor} {float(best):.4g}{unit}" if best is not None else ""
        log(f"[demgen fit] checkpoints in {ckpt.dirpath} (best.ckpt, last.ckpt){score}")
    return run_dir


def first_line(exc: BaseException) -> str:
    """A one-line summary of a (jsonargparse) error: for a class given by ``class_path``, the
    class's own complaint rather than the list of Union subtypes it did not match."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    for i, ln in enumerate(lines):
        if ln.startswith("- Problem with given class_path"):
            key = lines[0].removesuffix(":")
            cls = ln.split("'")[1].rsplit(".", 1)[-1] if "'" in ln else ""
            detail = []
            for more in lines[i + 1 :]:
                if more.startswith("- ") or more.startswith("Given value"):
                    break
                detail.append(more)
            return f"{key} ({cls}): {' '.join(detail)}"
    return " ".join(lines[:3])


if __name__ == "__main__":  # pragma: no cover
    fit(sys.argv[1:])
