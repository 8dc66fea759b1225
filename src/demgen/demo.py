"""The main job end to end, through the path real data takes: fit, predict, evaluate.

``run_demo`` trains with :func:`demgen.training.fit` on the shipped ``configs/demo.yaml``
(a :class:`~demgen.data.synth_datamodule.SynthWorldDataModule`: a synthetic world prepared
into a chip store by ``prepare_rasters``, the store's normalization linked into the task),
bounded by Lightning's ``max_time``. It then synthesizes held-out scenes from seeds the world
never used, one of the training relief and one of another relief, predicts each whole scene
from the saved checkpoint as a user would, and scores it beside two baselines fitted on the
store's training split (:mod:`demgen.demo_report`). Everything lands in one run folder.

The checkpoint scored is ``best.ckpt`` (lowest validation MAE), not ``last.ckpt``: the
validation chips are spatially apart from the training chips and the held-out scenes take no
part in the choice, so the pick is honest, and a time-bounded run can stop right after a
noisy epoch (plateau learning-rate steps make late epochs uneven) that ``last.ckpt`` would
keep.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from demgen.errors import InputError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


@dataclass
class DemoConfig:
    """What ``demgen demo`` runs: the fit config plus overrides, and the held-out scenes.

    ``data``, ``model`` and ``trainer`` are ``--data.init_args.*``, ``--model.init_args.*``
    and ``--trainer.*`` overrides of the config; ``minutes`` becomes ``--trainer.max_time``.
    ``fast()`` is the under-two-minutes variant the tests run.
    """

    config: str = str(REPO_CONFIG)
    minutes: float = 7.0
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    test_seed: int = 1000
    other_relief: str = "alpine"
    other_seed: int = 2000
    precision: str = "auto"

    @classmethod
    def fast(cls) -> DemoConfig:
        """Sixteen 256-px scenes, a U-Net half as wide (base 16: about 4x the steps a minute
        on a CPU) and one minute of training: the tests' demo, under 2 minutes in all."""
        return cls(minutes=1.0, data={"size": 256, "n_scenes": 16}, model={"base": 16})

    def settings(self) -> dict[str, dict[str, Any]]:
        """The config's ``model`` and ``data`` init_args with this demo's overrides applied."""
        cfg = yaml.safe_load(Path(self.config).read_text())
        return {
            "model": {**cfg["model"]["init_args"], **self.model},
            "data": {**cfg["data"]["init_args"], **self.data},
        }

    # the architecture, for benchmarks that build the demo's model without training it
    @property
    def base(self) -> int:
        return int(self.settings()["model"]["base"])

    @property
    def depth(self) -> int:
        return int(self.settings()["model"]["depth"])

    @property
    def stem(self) -> int:
        return int(self.settings()["model"]["stem"])

    @property
    def chip_size(self) -> int:
        return int(self.settings()["data"]["chip_size"])

    @property
    def pixel_size(self) -> float:
        return float(self.settings()["data"]["pixel_size"])


def _log(msg: str) -> None:
    print(f"[demgen demo] {msg}", flush=True)


def max_time(minutes: float) -> str:
    """``DD:HH:MM:SS`` for Lightning's ``Trainer(max_time=...)`` (whole seconds, at least 1)."""
    s = max(1, int(round(minutes * 60)))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def fit_args(config: DemoConfig, out: Path, *, progress: bool = True) -> list[str]:
    """The ``demgen fit`` arguments of a demo run into ``out``."""
    if not Path(config.config).is_file():
        raise InputError(
            f"demo config {config.config} not found (the demo runs from a demgen checkout)"
        )
    args = [
        "--config", str(config.config), "--run_root", str(out), "--run_name", "fit",
        "--data.init_args.cache_dir", str(out / "data"),
        "--trainer.max_time", max_time(config.minutes), "--precision", config.precision,
        "--trainer.enable_progress_bar", str(progress).lower(),
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    for group, overrides in (("data", config.data), ("model", config.model)):
        for key, value in overrides.items():
            args += [f"--{group}.init_args.{key}", str(value)]
    for key, value in config.trainer.items():
        args += [f"--trainer.{key}", str(value)]
    return args


def run_demo(
    out: str | Path,
    config: DemoConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Run the demo into ``out`` (created; must not exist or be empty); return the metrics."""
    from demgen.baselines import fit_baselines
    from demgen.data.chips import ChipStore
    from demgen.data.synth import RELIEFS, SceneConfig, generate_scene
    from demgen.demo_report import readme_table, render_report, score_scene
    from demgen.io.jsonio import write_json
    from demgen.io.raster import atomic_path, write_text_atomic
    from demgen.precision import resolve_precision
    from demgen.training import fit

    config = config or DemoConfig()
    if config.other_relief not in RELIEFS:
        raise InputError(f"other_relief must be one of {', '.join(RELIEFS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _quiet_lightning()

    # 1. Synthesize and prepare the world, train: all inside demgen fit.
    args = fit_args(config, out, progress=progress)
    log(f"1/3 training: demgen fit {' '.join(args)}")
    t_fit = time.time()
    run_dir = fit(args, log=log if progress else None)
    fit_seconds = time.time() - t_fit
    if run_dir is None:
        raise RuntimeError("demgen fit wrote no run folder")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = cfg["data"]["init_args"]
    store = _store_path(data)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    with atomic_path(out / "model.ckpt") as tmp:
        shutil.copyfile(ckpt, tmp)
    if (run_dir / "learning_curves.png").is_file():
        with atomic_path(out / "learning_curves.png") as tmp:
            shutil.copyfile(run_dir / "learning_curves.png", tmp)
    epochs, best_val = _epochs_and_best(run_dir / "metrics.csv")

    # 2. Held-out scenes from seeds the world never used, predicted from the checkpoint.
    relief, size, px = data["relief"], int(data["size"]), float(data["pixel_size"])
    world_seeds = range(int(data["seed"]), int(data["seed"]) + int(data["n_scenes"]))
    held = {
        "same_relief": ("test_scene", relief, config.test_seed),
        "other_relief": (f"test_scene_{config.other_relief}", config.other_relief,
                         config.other_seed),
    }  # fmt: skip
    if any(seed in world_seeds for _, _, seed in held.values()):
        raise InputError(f"held-out seeds must not be training seeds {list(world_seeds)}")
    log(f"2/3 predicting held-out scenes ({relief} seed {config.test_seed}, "
        f"{config.other_relief} seed {config.other_seed}) from best.ckpt")  # fmt: skip
    task = _load_task(out / "model.ckpt")
    preds: dict[str, tuple[Path, Path]] = {}
    for role, (name, rel, seed) in held.items():
        scene = generate_scene(
            out / name, SceneConfig(size=size, seed=seed, relief=rel, pixel_size=px)
        )
        suffix = "" if role == "same_relief" else f"_{rel}"
        pred = _predict(task, scene / "image.tif", out / f"prediction{suffix}.tif",
                        precision=config.precision, progress=progress)  # fmt: skip
        preds[role] = (Path(pred), scene)

    # 3. Score model and baselines on the same pixels; report.
    log("3/3 scoring against the true DTMs and two baselines fitted on the training split")
    mean_bl, lin_bl = fit_baselines(store)
    chips = ChipStore(store)
    metrics: dict[str, Any] = {
        "held_out": {role: score_scene(p, s, mean_bl, lin_bl) for role, (p, s) in preds.items()}
    }
    metrics["training"] = {
        "config": _display_path(config.config),
        "fit_run": str(run_dir.relative_to(out)),
        "store": str(Path(store).resolve().relative_to(out.resolve())),
        "relief": relief,
        "n_scenes": int(data["n_scenes"]),
        "size_px": size,
        "pixel_size_m": px,
        "chip_size": int(chips.manifest["chip_size"]),
        "train_chips": int(chips.indices("train").size),
        "val_chips": int(chips.indices("val").size),
        "epochs": epochs,
        "best_val_mae_m": best_val,
        "checkpoint": "best.ckpt",
        "max_time": max_time(config.minutes),
        "fit_seconds": round(fit_seconds, 1),
        "training_mean_m": mean_bl.mean_m,
    }
    metrics["config"] = asdict(config)
    metrics["precision"] = str(resolve_precision(config.precision))
    metrics["total_seconds"] = round(time.time() - t0, 1)
    metrics["readme_table"] = readme_table(metrics)
    write_json(out / "metrics.json", metrics)  # strict JSON: a NaN statistic becomes null
    write_text_atomic(out / "report.md", render_report(metrics))
    _figure(out, *preds["same_relief"], metrics["held_out"]["same_relief"])
    same = metrics["held_out"]["same_relief"]
    log(f"done in {metrics['total_seconds']:.0f} s ({epochs} epochs); same-relief MAE "
        f"{same['model']['mae_m']:.1f} m: {out.resolve()}")  # fmt: skip
    return metrics


def _store_path(data: dict[str, Any]) -> str:
    """The chip store the fit used: ``store`` of a ChipDataModule, else the one store that
    SynthWorldDataModule built under the demo's own ``cache_dir``."""
    if data.get("store"):
        return str(data["store"])
    found = sorted(Path(data["cache_dir"]).glob("synth_*/store"))
    if len(found) != 1:
        raise RuntimeError(f"expected one chip store under {data['cache_dir']}, found {found}")
    return str(found[0])


def _epochs_and_best(metrics_csv: Path) -> tuple[int, float]:
    """Validated epochs and the best validation MAE (metres) of a fit run's metrics.csv."""
    vals = []
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("val_mae_m"):
                vals.append(float(row["val_mae_m"]))
    return len(vals), (min(vals) if vals else math.nan)


def _display_path(path: str) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_CONFIG.parents[1]))
    except ValueError:
        return str(p)


def _load_task(checkpoint: Path) -> Any:
    from demgen.tasks import load_task  # the task registry: loading lives with the tasks

    return load_task(checkpoint)


def _predict(task: Any, image: Path, out: Path, **kwargs: Any) -> Path:
    from demgen.inference.scene import predict_scene

    return Path(predict_scene(task, image, out, **kwargs))


def _figure(out: Path, pred_path: Path, scene: Path, s: dict[str, Any]) -> None:
    from demgen.io.raster import read_raster
    from demgen.viz.figures import comparison_figure

    pred, pprof = read_raster(pred_path, dtype=np.float32)
    truth, _ = read_raster(scene / "dtm.tif", dtype=np.float32)
    image, iprof = read_raster(scene / "image.tif")
    tr = pprof["transform"]
    comparison_figure(
        out / "figure.png",
        image=image,
        bands=[d or "" for d in iprof["descriptions"]],
        truth=truth[0],
        prediction=np.where(pred[0] == pprof["nodata"], np.nan, pred[0]),
        pixel_size=(abs(tr.a), abs(tr.e)),
        title=f"Held-out `{s['relief']}` scene: model MAE {s['model']['mae_m']:.1f} m",
    )


def _quiet_lightning() -> None:
    """Keep Lightning's banners (accelerator, tips) out of the demo's output."""
    import torch

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_float32_matmul_precision("high")
