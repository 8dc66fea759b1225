"""The main job end to end: synthesize a world, train, predict a held-out scene, evaluate.

Everything the demo writes lands in one run folder: the held-out scene, the
checkpoint, the prediction GeoTIFF, metrics against two honest baselines, a
Markdown report and a figure.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from demgen.baselines import LinearBands, MeanElevation
from demgen.data.scenes import SceneDataModule, load_scene
from demgen.data.synth import SceneConfig, generate_scene, generate_world
from demgen.inference.scene import load_task, predict_scene
from demgen.io.jsonio import write_json
from demgen.io.raster import atomic_path, read_raster, same_grid, write_text_atomic
from demgen.metrics.dem import error_stats, valid_pixels
from demgen.precision import precision_reason, resolve_precision
from demgen.tasks.regression import DEMRegressionTask
from demgen.viz.figures import comparison_figure, learning_curves


@dataclass
class DemoConfig:
    """Sizes and budgets of the demo; ``fast()`` is the under-two-minutes variant for tests."""

    size: int = 512
    pixel_size: float = 10.0
    n_train: int = 4
    n_val: int = 1
    relief: str = "hills"
    seed: int = 1
    test_seed: int = 1000
    chip_size: int = 256
    batch_size: int = 8
    samples_per_epoch: int = 256
    base: int = 32
    depth: int = 4
    stem: int = 4
    lr: float = 2e-3
    budget_minutes: float = 7.0
    max_epochs: int = 500
    precision: str = "auto"

    @classmethod
    def fast(cls) -> DemoConfig:
        return cls(size=256, n_train=3, budget_minutes=1.0, samples_per_epoch=128)


def _log(msg: str) -> None:
    print(f"[demgen demo] {msg}", flush=True)


def run_demo(
    out: str | Path,
    config: DemoConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Run the demo into ``out`` (created; must not exist or be empty); return the metrics."""
    config = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    L.seed_everything(config.seed, verbose=False)

    # 1. A world: training and validation scenes, and a held-out scene from another seed.
    n_scenes = config.n_train + config.n_val
    log(f"1/5 synthesizing {n_scenes} scenes of {config.size} px and a held-out test scene")
    base_cfg = SceneConfig(
        size=config.size, seed=config.seed, relief=config.relief, pixel_size=config.pixel_size
    )
    world = generate_world(out / "world", n_scenes, base_cfg, progress=progress)
    test_dir = generate_scene(
        out / "test_scene", replace(base_cfg, seed=config.test_seed), progress=progress
    )
    train = [load_scene(p) for p in world[: config.n_train]]
    val = [load_scene(p) for p in world[config.n_train :]]

    # 2. Train within a bounded time budget.
    precision = resolve_precision(config.precision)
    log(
        f"2/5 training a U-Net (base {config.base}, depth {config.depth}) for at most "
        f"{config.budget_minutes:g} min, precision {precision}"
        + (f" ({precision_reason()})" if config.precision == "auto" else "")
    )
    dm = SceneDataModule(
        train,
        val,
        chip_size=config.chip_size,
        batch_size=config.batch_size,
        samples_per_epoch=config.samples_per_epoch,
        seed=config.seed,
    )
    task = DEMRegressionTask(
        dm.image_norm.to_dict(),
        dm.elevation_norm.to_dict(),
        base=config.base,
        depth=config.depth,
        stem=config.stem,
        lr=config.lr,
        chip_size=config.chip_size,
        pixel_size=config.pixel_size,
    )
    _quiet_lightning()
    ckpt_cb = ModelCheckpoint(
        dirpath=out / "checkpoints", monitor="val_mae_m", mode="min", save_top_k=1, save_last=True
    )
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        max_time={"seconds": int(config.budget_minutes * 60)},
        precision=precision,
        accelerator="auto",
        devices=1,
        logger=CSVLogger(out, name="logs", version=""),
        callbacks=[ckpt_cb],
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=5,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*", FutureWarning)
        t_fit = time.time()
        trainer.fit(task, datamodule=dm)
        train_seconds = time.time() - t_fit
    with atomic_path(out / "model.ckpt") as tmp:
        shutil.copyfile(ckpt_cb.best_model_path, tmp)
    log(f"   {trainer.current_epoch} epochs, best val MAE {float(ckpt_cb.best_model_score):.2f} m")

    # 3. Predict the whole held-out scene from the saved checkpoint, as a user would.
    log("3/5 predicting the held-out scene")
    best = load_task(out / "model.ckpt")
    pred_path = predict_scene(
        best, test_dir / "image.tif", out / "prediction.tif", precision=config.precision,
        progress=progress,
    )  # fmt: skip

    # 4. Evaluate model and baselines on the same valid pixels.
    log("4/5 evaluating against the true DTM and two baselines")
    metrics = evaluate_against_baselines(pred_path, test_dir, train)
    metrics["config"] = asdict(config)
    metrics["precision"] = precision
    metrics["epochs"] = trainer.current_epoch
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["total_seconds"] = round(time.time() - t0, 1)

    # 5. Report.
    log("5/5 writing metrics.json, report.md, figure.png and learning_curves.png")
    write_json(out / "metrics.json", metrics)  # strict JSON: a NaN statistic becomes null
    write_text_atomic(out / "report.md", render_report(metrics))
    pred, pprof = read_raster(pred_path, dtype=np.float32)
    truth, _ = read_raster(test_dir / "dtm.tif", dtype=np.float32)
    image, iprof = read_raster(test_dir / "image.tif")
    tr = pprof["transform"]
    comparison_figure(
        out / "figure.png",
        image=image,
        bands=[d or "" for d in iprof["descriptions"]],
        truth=truth[0],
        prediction=np.where(pred[0] == pprof["nodata"], np.nan, pred[0]),
        pixel_size=(abs(tr.a), abs(tr.e)),
        title=f"Held-out scene: model MAE {metrics['model']['mae_m']:.1f} m",
    )
    learning_curves(out / "logs" / "metrics.csv", out / "learning_curves.png",
                    title="demo training")  # fmt: skip
    log(f"done in {metrics['total_seconds']:.0f} s: {out.resolve()}")
    return metrics


def evaluate_against_baselines(
    pred_path: Path, test_dir: Path, train_scenes: list
) -> dict[str, Any]:
    """Metrics of the prediction and of both baselines on the pixels valid for all three."""
    pred, pprof = read_raster(pred_path, dtype=np.float32)
    truth, tprof = read_raster(test_dir / "dtm.tif", dtype=np.float32)
    image, _ = read_raster(test_dir / "image.tif")
    if not same_grid(pprof, tprof):
        raise RuntimeError("prediction is not on the test scene's grid")
    p = np.where(pred[0] == pprof["nodata"], np.nan, pred[0])

    heights = np.concatenate([s.height[s.valid] for s in train_scenes])
    rng = np.random.default_rng(0)
    pix, hts = [], []
    for s in train_scenes:
        idx = np.flatnonzero(s.valid.ravel())
        take = rng.choice(idx, size=min(200_000, idx.size), replace=False)
        pix.append(s.image.reshape(s.image.shape[0], -1)[:, take].T)
        hts.append(s.height.ravel()[take])
    mean_bl = MeanElevation().fit(heights)
    lin_bl = LinearBands().fit(np.concatenate(pix), np.concatenate(hts))
    preds = {
        "model": p,
        "mean_baseline": mean_bl.predict(image),
        "linear_baseline": lin_bl.predict(image),
    }
    ok = valid_pixels(p, truth[0])
    for q in preds.values():
        ok &= np.isfinite(q)
    result: dict[str, Any] = {name: error_stats(q, truth[0], ok) for name, q in preds.items()}
    best_bl = min(result["mean_baseline"]["mae_m"], result["linear_baseline"]["mae_m"])
    result["mae_ratio_to_best_baseline"] = result["model"]["mae_m"] / best_bl
    result["truth_range_m"] = [float(np.nanmin(truth[0][ok])), float(np.nanmax(truth[0][ok]))]
    return result


def render_report(m: dict[str, Any]) -> str:
    """A Markdown table of the model against the baselines, in metres."""
    rows = [
        ("U-Net (demgen)", m["model"]),
        ("Training-mean elevation", m["mean_baseline"]),
        ("Per-pixel linear regression on bands", m["linear_baseline"]),
    ]
    lines = [
        "# demgen demo: held-out scene",
        "",
        f"Held-out scene seed {m['config']['test_seed']}, {m['config']['size']} x "
        f"{m['config']['size']} px at 10 m, relief `{m['config']['relief']}`; true heights "
        f"{m['truth_range_m'][0]:.0f} to {m['truth_range_m'][1]:.0f} m; "
        f"{m['model']['n_pixels']:,} pixels valid for all three.",
        "",
        "| method | MAE (m) | RMSE (m) | bias (m) | NMAD (m) | LE90 (m) | R2 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['mae_m']:.1f} | {s['rmse_m']:.1f} | {s['bias_m']:+.1f} | "
            f"{s['nmad_m']:.1f} | {s['le90_m']:.1f} | {s['r2']:.3f} |"
        )
    lines += [
        "",
        f"Model MAE / best baseline MAE = {m['mae_ratio_to_best_baseline']:.2f} "
        f"(trained {m['epochs']} epochs, precision {m['precision']}, "
        f"{m['total_seconds']:.0f} s in all).",
        "",
        "![held-out scene](figure.png)",
        "",
    ]
    return "\n".join(lines)


def _quiet_lightning() -> None:
    """Keep Lightning's banners (accelerator, tips) out of the demo's output."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_float32_matmul_precision("high")
