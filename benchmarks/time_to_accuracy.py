"""Time to accuracy: held-out height error against wall-clock training minutes, per recipe.

Issue 16. One synthetic world and one split for every recipe; each recipe is trained for the
same wall-clock budgets and the checkpoint with the lowest validation MAE at each budget is
scored on held-out scenes of seeds the world never used. A recipe whose schedule does not
know the budget (plateau steps, a constant rate) trains once, to the largest budget, and
:class:`BudgetMarks` keeps the checkpoint each smaller budget would have ended with; a
recipe whose schedule is shaped to the budget (``demgen_best``) trains once per budget
(``--shaped-budgets``).

World: ``--scenes`` scenes (default 48) of ``--size`` px (256) at 10 m, reliefs
``--reliefs`` in turn (default hills, plains: seed s has relief ``reliefs[(s - 1) % n]``;
a first world with alpine scenes was not learnable, see :data:`RELIEFS`), synthesized once
(:func:`demgen.data.synth.generate_scene`) and prepared once
(:func:`demgen.data.prepare.prepare_rasters`, elevation ``global``, image ``percentile``)
into two chip stores of the same rasters, cached under ``--work``:

- 256-px chips: the Sat2DEM chip size (its U-Net generator has 8 levels: 256 px -> 1 px);
- 128-px chips: the chip size of demgen's demo recipe (``configs/demo.yaml``).

Both stores split whole scenes (a split block is one scene: ``block`` = scene / chip px), so
their train and val scenes are the same (checked, and recorded); 75/25 train/val dealt by
:data:`SPLIT_SEED`, no test split: the test is the held-out scenes. Many small scenes
rather than a few large ones: each synthetic scene draws its own base level and climate
lines, so with a dozen scenes the error on a few unseen ones was mostly that level (a first
run on 12 scenes of 512 px scored 2 held-out scenes with a bias of -340 m). Held-out:
``--held-out`` scenes per relief (default 4; seeds 1000 + 100 x relief index + k),
prepared as a 256-px store and scored with ``demgen test``'s scorer
(:func:`demgen.scoring.score_checkpoint`, ``split="all"``), the baselines (training mean,
per-pixel linear regression on the bands) fitted on the 256-px training store: every
recipe is scored on the same chips and pixels.

Recipes (:data:`RECIPES`; every recipe's full config is written to ``WORK/configs/``):

- ``demgen_default``: ``configs/demo.yaml`` (what ``demgen demo`` trains: U-Net base 32,
  depth 4, stem 4, AdamW lr 2e-3 with plateau steps, L1, batch 8, augment) on the 128-px store;
- ``sat2dem_pix2pix``: ``configs/sat2dem/pix2pix_none.yaml`` as published (the 8-level
  pix2pix U-Net generator, 70x70 PatchGAN, BCE, lambda_L1 100, Adam 2e-4 betas 0.5/0.999)
  with batch 32 (the config says 8) on the 256-px store;
- ``sat2dem_unet``: ``configs/sat2dem/unet_none.yaml`` (the same generator regressed with
  masked L1, Adam 2e-4), batch 32, 256-px store;
- ``demgen_best``: demgen's default plus a schedule fitted to the budget: the learning rate
  follows the wall clock (:class:`TimeCosineLR`: linear warm-up over the first 5 % of the
  budget to a peak of 3e-3, then a cosine down to 1 % of it at the budget's end; plateau
  steps off), so every budget ends annealed. Everything else as the demo (stem 4,
  batch 8, 128 px, augment on: already the demo's). A guess, not a tuned optimum: try others
  with ``--set demgen_best:model.init_args.lr=0.004`` and the like.

Changes made to every recipe, so that only the budget stops a run: ``max_epochs`` 10^6,
early-stopping patience 10^6, no sanity validation, ``num_workers`` 0 (the store is memory-
mapped; workers only compete for the cores), one ``seed_everything`` (``--seed``), precision
``auto`` (bf16 autocast on CPUs with AMX). All recipes read all four bands (B2 B3 B4 B8);
Sat2DEM's RGB choice is left out so that the comparison is of recipes, not inputs.

Each (recipe, budget) records: minutes, epochs, training batches and chips seen, best
validation MAE, held-out ``mae_m``, ``rmse_m``, ``nmad_m``, ``slope_rmse_deg`` (and bias,
LE90, R2), fit wall seconds and the load average before it. The JSON is written after every
run and is resumable: a (recipe, budget) already in it with the same settings is skipped.
The summary gives, per budget, sat2dem_pix2pix MAE / demgen_default MAE (the issue's target:
at least 4 at every budget) and the time to accuracy: the smallest demgen_default budget
whose MAE is at most the sat2dem_pix2pix MAE at its largest budget (the target: at most a
tenth of that budget, 3 minutes against 30).

    .venv/bin/python benchmarks/time_to_accuracy.py                       # ~2.4 h on 2 cores
    .venv/bin/python benchmarks/time_to_accuracy.py --budgets 2,5         # in parts: same --out
    .venv/bin/python benchmarks/time_to_accuracy.py --recipes demgen_best --shaped-budgets 30
    .venv/bin/python benchmarks/time_to_accuracy.py --report              # summary + plot only
    # as measured for the README: two processes of one thread each, then merged
    .venv/bin/python benchmarks/time_to_accuracy.py --threads 1 \
        --recipes demgen_default,demgen_best --shaped-budgets 2,5,15 &
    .venv/bin/python benchmarks/time_to_accuracy.py --threads 1 \
        --recipes sat2dem_pix2pix,sat2dem_unet --out runs/second.json --plot runs/second.png
    .venv/bin/python benchmarks/time_to_accuracy.py --report --merge runs/second.json
    # smoke run (seconds): a tiny world, a few seconds a run, one thread, into /tmp
    .venv/bin/python benchmarks/time_to_accuracy.py --budgets 0.05 --scenes 2 --size 256 \\
        --recipes demgen_default,sat2dem_unet --threads 1 --work /tmp/tta --out /tmp/tta.json \\
        --plot /tmp/tta.png
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: the default reliefs of the world. A first run with alpine scenes too (seeds 1-12 hills,
#: alpine, plains in turn) was not learnable in 30 minutes by any recipe (demgen_default:
#: validation MAE 790 m, held-out 627 m against the training mean's 895 m): alpine heights
#: of 200-4000 m under climate lines each scene draws are not identifiable from a 5-km image.
RELIEFS = ("hills", "plains")
#: held-out seed of relief i: 1000 + i
HELD_OUT_BASE = 1000
PIXEL_SIZE = 10.0
FRACTIONS = (0.75, 0.25, 0.0)
#: the seed dealing scenes to train and val: with 12 scenes, 9 train (3 of each relief) and
#: 3 val (seeds 8, 9, 10: one of each relief)
SPLIT_SEED = 1
HELD_CHIP = 256
METRIC_KEYS = ("mae_m", "rmse_m", "nmad_m", "slope_rmse_deg", "bias_m", "le90_m", "r2",
               "mae_chip_level_free_m")  # fmt: skip
DEFAULT_OUT = ROOT / "benchmarks" / "time_to_accuracy.json"
DEFAULT_PLOT = ROOT / "benchmarks" / "time_to_accuracy.png"

#: name -> config, store chip size, batch size, overrides of the config (dotted keys), and
#: the budget-shaped learning-rate schedule (None: the config's own).
RECIPES: dict[str, dict[str, Any]] = {
    "demgen_default": {
        "config": "configs/demo.yaml",
        "chip": 128,
        "batch": 8,
        "set": {},
        "schedule": None,
        "what": "configs/demo.yaml as `demgen demo` trains it (plateau LR steps)",
    },
    "sat2dem_pix2pix": {
        "config": "configs/sat2dem/pix2pix_none.yaml",
        "chip": 256,
        "batch": 32,
        "set": {},
        "schedule": None,
        "what": "Sat2DEM pix2pix as published: 256-px U-Net generator + PatchGAN, "
        "lambda_L1 100, batch 32",
    },
    "sat2dem_unet": {
        "config": "configs/sat2dem/unet_none.yaml",
        "chip": 256,
        "batch": 32,
        "set": {},
        "schedule": None,
        "what": "Sat2DEM U-Net as published: the 256-px U-Net generator with masked L1, batch 32",
    },
    "demgen_best": {
        "config": "configs/demo.yaml",
        "chip": 128,
        "batch": 8,
        # the plateau steps off: the clock alone sets the rate
        "set": {"model.init_args.lr": 0.003, "model.init_args.lr_patience": 10**6},
        "schedule": {"warmup": 0.05, "floor": 0.01},
        "what": "demgen_default with the LR on the wall clock: 5 % warm-up to 3e-3, cosine "
        "to 1 % at the budget's end",
    },
}


# --- callbacks the runs use (imported by class path from this module) ----------------------


class TimeCosineLR(Callback):
    """A one-cycle schedule in wall-clock time: before every training batch, every optimizer's
    learning rates are set to their configured value times ``s(f)``, ``f`` the fraction of
    ``seconds`` elapsed since training started (what Lightning's ``max_time`` counts):
    ``s`` rises linearly from ``warmup_start`` to 1 over ``f < warmup``, then falls on a
    cosine to ``floor`` at ``f = 1``. A step-based one-cycle needs the step count, which a
    time budget does not know; this one ends annealed whenever the budget ends. The task's
    own plateau steps are overridden (the next batch sets the rate again)."""

    def __init__(
        self, seconds: float, warmup: float = 0.05, floor: float = 0.01, warmup_start: float = 0.1
    ) -> None:
        self.seconds = float(seconds)
        self.warmup, self.floor, self.warmup_start = float(warmup), float(floor), warmup_start
        self.t0: float | None = None
        self.peaks: list[list[float]] = []

    def scale(self, f: float) -> float:
        f = min(max(f, 0.0), 1.0)
        if f < self.warmup:
            return self.warmup_start + (1.0 - self.warmup_start) * f / self.warmup
        g = (f - self.warmup) / max(1e-9, 1.0 - self.warmup)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * g))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0 = time.monotonic()
        self.peaks = [[float(g["lr"]) for g in o.param_groups] for o in trainer.optimizers]

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        assert self.t0 is not None
        s = self.scale((time.monotonic() - self.t0) / self.seconds)
        for opt, peaks in zip(trainer.optimizers, self.peaks, strict=True):
            for group, peak in zip(opt.param_groups, peaks, strict=True):
                group["lr"] = peak * s


class CountBatches(Callback):
    """Passive: counts training batches and chips, writes ``throughput.json`` in the run
    folder at the end (every recipe gets it; it changes nothing)."""

    def __init__(self) -> None:
        self.batches = 0
        self.chips = 0
        self.t0: float | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0 = time.monotonic()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           idx: int) -> None:  # fmt: skip
        self.batches += 1
        if isinstance(batch, dict) and "image" in batch:
            self.chips += int(batch["image"].shape[0])

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        folder = trainer.log_dir
        if folder is None:
            return
        info = {"train_batches": self.batches, "train_chips_seen": self.chips,
                "train_seconds": round(time.monotonic() - (self.t0 or time.monotonic()), 1),
                "global_step": int(trainer.global_step),
                "epochs_started": int(trainer.current_epoch) + 1}  # fmt: skip
        Path(folder, "throughput.json").write_text(json.dumps(info, indent=1) + "\n")


class BudgetMarks(Callback):
    """One run, several budgets: at the first training batch that ends past each mark (minutes
    of training wall clock since ``on_train_start``, what Lightning's ``max_time`` counts),
    the checkpoint a run stopped there would keep is copied to ``checkpoints/at_<m>min.ckpt``:
    ``best.ckpt`` as it is then (the lowest validation MAE so far), or the current weights
    when no validation has run yet. The last mark (the run's ``max_time``) and any the run
    never reached are taken at ``on_train_end``, after the stop's own validation.
    ``marks.json`` in the run folder records, per mark, the seconds, epochs validated,
    batches and chips, and the best validation MAE.

    For a recipe whose schedule does not depend on the budget (plateau steps or a constant
    rate) this equals a separate run per budget, except that a run stopped at the mark
    validates once more on its last partial epoch; epochs here last seconds (18 batches of
    128 px, or 2 of 256 px at batch 32), so that last validation is within seconds of one
    this run made."""

    def __init__(self, minutes: list[float]) -> None:
        self.marks = sorted(float(m) for m in minutes)
        self.pending: list[float] = []
        self.taken: dict[str, dict[str, Any]] = {}
        self.batches = self.chips = self.validations = 0
        self.t0: float | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0 = time.monotonic()
        self.pending = list(self.marks)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.validations += 1

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           idx: int) -> None:  # fmt: skip
        self.batches += 1
        if isinstance(batch, dict) and "image" in batch:
            self.chips += int(batch["image"].shape[0])
        assert self.t0 is not None
        elapsed = time.monotonic() - self.t0
        # the last mark is the run's own budget: taken at the stop, after its validation
        while len(self.pending) > 1 and elapsed >= self.pending[0] * 60.0:
            self._take(trainer, self.pending.pop(0), elapsed)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        elapsed = time.monotonic() - (self.t0 or time.monotonic())
        while self.pending:
            self._take(trainer, self.pending.pop(0), elapsed)

    def _take(self, trainer: Any, mark: float, elapsed: float) -> None:
        import shutil

        folder = Path(trainer.log_dir or ".")
        out = folder / "checkpoints" / f"at_{budget_key(mark)}min.ckpt"
        out.parent.mkdir(parents=True, exist_ok=True)
        ckpt_cb = trainer.checkpoint_callback
        best = Path(ckpt_cb.best_model_path) if ckpt_cb and ckpt_cb.best_model_path else None
        if best is not None and best.is_file():
            shutil.copyfile(best, out)
            source = "best"
        else:
            trainer.save_checkpoint(out, weights_only=True)
            source = "current weights (no validation yet)"
        score = None if ckpt_cb is None or ckpt_cb.best_model_score is None else \
            float(ckpt_cb.best_model_score)  # fmt: skip
        self.taken[budget_key(mark)] = {
            "mark_minutes": mark, "taken_at_s": round(elapsed, 1), "checkpoint": str(out),
            "source": source, "validations": self.validations, "train_batches": self.batches,
            "train_chips_seen": self.chips, "global_step": int(trainer.global_step),
            "best_val_mae_m": score,
        }  # fmt: skip
        tmp = folder / "marks.json.tmp"
        tmp.write_text(json.dumps(self.taken, indent=1) + "\n")
        os.replace(tmp, folder / "marks.json")


def _class_path(cls: type) -> str:
    """The import path of a class of this module, run as a script (``__main__``) or not."""
    return f"{cls.__module__}.{cls.__qualname__}"


# --- the world ------------------------------------------------------------------------------


def relief_of(seed: int, reliefs: tuple[str, ...] = RELIEFS) -> str:
    return reliefs[(seed - 1) % len(reliefs)]


def scenes(work: Path, seeds: dict[int, str], size: int) -> list[Path]:
    """Synthesize (once: kept under ``work/scenes``) a scene per (seed, relief)."""
    from demgen.data.synth import SceneConfig, generate_scene

    out = []
    for seed, relief in seeds.items():
        path = work / "scenes" / f"{relief}_seed{seed}_{size}px"
        if not (path / "scene.json").is_file():
            generate_scene(path, SceneConfig(size=size, seed=seed, relief=relief,
                                             pixel_size=PIXEL_SIZE))  # fmt: skip
        out.append(path)
    return out


def prepare(scene_dirs: list[Path], out: Path, chip: int, fractions: tuple, block: int) -> Path:
    """Prepare ``scene_dirs`` into the chip store ``out`` (once)."""
    from demgen.data.prepare import PrepareConfig, prepare_rasters

    if (out / "manifest.json").is_file():
        return out
    cfg = PrepareConfig(chip_size=chip, normalize="global", image_normalize="percentile",
                        fractions=fractions, block=block, min_blocks=1,
                        seed=SPLIT_SEED)  # fmt: skip
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    prepare_rasters([s / "image.tif" for s in scene_dirs], [s / "dtm.tif" for s in scene_dirs],
                    tmp, cfg)  # fmt: skip
    tmp.rename(out)
    return out


def split_scenes(store: Path) -> dict[str, list[int]]:
    """Scene indices (into the prepare list) of the train and val chips of a store."""
    from demgen.data.chips import ChipStore

    s = ChipStore(store)
    chips = s.chips
    return {name: sorted({int(chips[i]["scene"]) for i in s.indices(name)})
            for name in ("train", "val")}  # fmt: skip


def build_world(work: Path, n_scenes: int, size: int, reliefs: tuple[str, ...] = RELIEFS,
                n_held: int = 1) -> dict[str, Any]:  # fmt: skip
    """The scenes, the two training stores, the held-out store and what they hold."""
    from demgen.data.chips import ChipStore

    if size % 256:
        raise SystemExit(f"--size {size}: must be a multiple of 256 (the Sat2DEM chip)")
    if n_scenes < 2:
        raise SystemExit("--scenes: at least 2 (one train and one val scene)")
    seeds = {s: relief_of(s, reliefs) for s in range(1, n_scenes + 1)}
    world = scenes(work, seeds, size)
    held_seeds = {r: [HELD_OUT_BASE + 100 * i + k for k in range(n_held)]
                  for i, r in enumerate(reliefs)}  # fmt: skip
    held = scenes(work, {s: r for r, ss in held_seeds.items() for s in ss}, size)
    tag = f"{n_scenes}x{size}px_{'-'.join(reliefs)}_split{SPLIT_SEED}"
    stores = {chip: prepare(world, work / "stores" / f"train_{tag}_chip{chip}", chip, FRACTIONS,
                            block=size // chip)
              for chip in (128, 256)}  # fmt: skip
    held_name = f"heldout_{n_held}x{size}px_{'-'.join(reliefs)}_chip{HELD_CHIP}"
    held_store = prepare(held, work / "stores" / held_name, HELD_CHIP, (1.0, 0.0, 0.0), block=1)
    info: dict[str, Any] = {
        "scenes": n_scenes, "size_px": size, "pixel_size_m": PIXEL_SIZE,
        "reliefs": {str(s): r for s, r in seeds.items()}, "split_fractions": list(FRACTIONS),
        "split_seed": SPLIT_SEED,
        "split": "whole scenes (one split block per scene), the same in both stores",
        "stores": {},
        "held_out": {"seeds": held_seeds, "chip_px": HELD_CHIP,
                     "chips": int(ChipStore(held_store).indices("train").size),
                     "scored_with": "demgen.scoring.score_checkpoint(split='all', "
                     "baseline_store=the 256-px training store)"},
    }  # fmt: skip
    splits = {}
    order = list(seeds)
    for chip, store in stores.items():
        s = ChipStore(store)
        splits[chip] = split_scenes(store)
        info["stores"][f"chip{chip}"] = {
            "path": str(store), "train_chips": int(s.indices("train").size),
            "val_chips": int(s.indices("val").size),
            "excluded_chips": len(s.manifest.get("splits", {}).get("excluded", [])),
            "train_scene_seeds": [order[i] for i in splits[chip]["train"]],
            "val_scene_seeds": [order[i] for i in splits[chip]["val"]],
            "val_scene_reliefs": [seeds[order[i]] for i in splits[chip]["val"]],
        }  # fmt: skip
    if splits[128] != splits[256]:
        raise SystemExit(f"the 128- and 256-px stores split different scenes: {splits}")
    return {"info": info, "stores": stores, "held_store": held_store}


# --- the runs -------------------------------------------------------------------------------


def budget_key(minutes: float) -> str:
    return f"{minutes:g}"


def _set(cfg: dict, dotted: str, value: Any) -> None:
    node = cfg
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def recipe_settings(name: str, extra: dict[str, Any], seed: int) -> dict[str, Any]:
    """What decides a run of ``name`` besides its budget (a stored run with other settings
    is run again)."""
    r = RECIPES[name]
    return {"config": r["config"], "chip": r["chip"], "batch": r["batch"],
            "set": {**r["set"], **extra}, "schedule": r["schedule"], "seed": seed}  # fmt: skip


def recipe_config(settings: dict, store: Path, minutes: float,
                  marks: list[float] | None = None) -> dict:  # fmt: skip
    """The full fit config of one run of ``minutes``; with ``marks``, :class:`BudgetMarks`
    keeps the checkpoint of each of those budgets too."""
    from demgen.demo import max_time

    cfg = yaml.safe_load((ROOT / settings["config"]).read_text())
    cfg.pop("run_name", None)
    cfg["seed_everything"] = settings["seed"]
    trainer = dict(cfg.get("trainer") or {})
    trainer.update(max_epochs=10**6, num_sanity_val_steps=0, max_time=max_time(minutes))
    callbacks = [{"class_path": _class_path(CountBatches)}]
    if settings["schedule"]:
        init = {"seconds": minutes * 60.0, **settings["schedule"]}
        callbacks.append({"class_path": _class_path(TimeCosineLR), "init_args": init})
    if marks:
        callbacks.append({"class_path": _class_path(BudgetMarks),
                          "init_args": {"minutes": [float(m) for m in marks]}})  # fmt: skip
    trainer["callbacks"] = callbacks
    cfg["trainer"] = trainer
    cfg["data"] = {"class_path": "demgen.data.datamodule.ChipDataModule",
                   "init_args": {"store": str(store), "batch_size": settings["batch"],
                                 "num_workers": 0, "augment": True}}  # fmt: skip
    cfg["early_stopping"] = {"patience": 10**6}
    for k, v in settings["set"].items():
        _set(cfg, k, v)
    return cfg


def _val_curve(metrics_csv: Path) -> list[float]:
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as fh:
        return [float(r["val_mae_m"]) for r in csv.DictReader(fh) if r.get("val_mae_m")]


def snapshots(settings: dict) -> bool:
    """Whether one run can stand for every budget: the schedule does not know the budget."""
    return not settings["schedule"]


def run_one(name: str, settings: dict, budgets: list[float], world: dict,
            work: Path) -> tuple[dict[str, dict], dict]:  # fmt: skip
    """Train ``name`` and score it at ``budgets``: one run per budget for a budget-shaped
    schedule (one budget here), else one run to the largest budget with a checkpoint kept at
    each (:class:`BudgetMarks`). Returns ({budget key: entry}, baselines)."""
    from demgen.scoring import score_checkpoint
    from demgen.tasks import load_task
    from demgen.training import fit

    store = world["stores"][settings["chip"]]
    top = max(budgets)
    marks = sorted(budgets) if snapshots(settings) else None
    if marks is None and len(budgets) != 1:
        raise ValueError(f"{name}: a budget-shaped schedule trains one budget a run")
    cfg = recipe_config(settings, store, top, marks)
    run_name = f"{name}_{budget_key(top)}min" + ("_marks" if marks else "")
    cfg_path = work / "configs" / f"{run_name}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    load = os.getloadavg()[0]
    t0 = time.time()
    run = fit(["--config", str(cfg_path), "--run_root", str(work / "runs"), "--run_name",
               run_name, "--precision", "auto", "--trainer.enable_progress_bar", "false",
               "--trainer.enable_model_summary", "false"], log=None)  # fmt: skip
    fit_s = time.time() - t0
    if run is None:
        raise RuntimeError(f"{run_name}: fit wrote no run folder")
    run = Path(run)
    vals = _val_curve(run / "metrics.csv")
    thr = run / "throughput.json"
    throughput = json.loads(thr.read_text()) if thr.is_file() else {}
    used = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() \
        else {}  # fmt: skip
    if marks:
        taken = json.loads((run / "marks.json").read_text())
    else:
        ckpt = run / "checkpoints" / "best.ckpt"
        if not ckpt.is_file():
            ckpt = run / "checkpoints" / "last.ckpt"
        taken = {budget_key(top): {
            "checkpoint": str(ckpt), "source": ckpt.stem, "validations": len(vals),
            "train_seconds": throughput.get("train_seconds"),
            **{k: throughput.get(k) for k in ("train_batches", "train_chips_seen", "global_step")},
            "best_val_mae_m": min(vals) if vals else None,
        }}  # fmt: skip
    entries: dict[str, dict] = {}
    baselines: dict = {}
    for k, t in taken.items():
        ckpt = Path(t["checkpoint"])
        t1 = time.time()
        r = score_checkpoint(load_task(ckpt), world["held_store"], split="all", progress=False,
                             baseline_store=world["stores"][256])  # fmt: skip
        score_s = time.time() - t1
        m = r["methods"]["model"]
        n_val = int(t["validations"])
        entries[k] = {
            "minutes": float(k),
            "max_time": cfg["trainer"]["max_time"],
            "how": f"checkpoint at {k} min of one {top:g}-min run" if marks else "its own run",
            "epochs": n_val,
            "train_batches": t.get("train_batches"),
            "train_chips_seen": t.get("train_chips_seen"),
            "global_step": t.get("global_step"),
            "train_seconds": t.get("taken_at_s", t.get("train_seconds")),
            "best_val_mae_m": t.get("best_val_mae_m"),
            "last_val_mae_m": vals[n_val - 1] if 0 < n_val <= len(vals) else None,
            "checkpoint": f"{ckpt.name} ({t['source']})",
            "held_out": {kk: m.get(kk) for kk in METRIC_KEYS},
            "held_out_pixels": m.get("n_pixels"),
            "fit_wall_s": round(fit_s, 1),
            "score_wall_s": round(score_s, 1),
            "load_avg_before": round(load, 2),
            "precision": str((used.get("trainer") or {}).get("precision")),
            "run": str(run),
            "config": str(cfg_path),
            "settings": settings,
        }
        baselines = {kk: {kkk: v.get(kkk) for kkk in METRIC_KEYS}
                     for kk, v in r["methods"].items() if kk != "model"}  # fmt: skip
    return entries, baselines


# --- summary, report, plot --------------------------------------------------------------------


def _mae(res: dict, recipe: str, b: str, key: str = "mae_m") -> float | None:
    e = res.get("runs", {}).get(recipe, {}).get(b)
    return None if e is None else e["held_out"].get(key)


def summarize(res: dict) -> dict[str, Any]:
    """Per budget the pix2pix / default MAE ratio; the time-to-accuracy statement."""
    runs = res.get("runs", {})
    out: dict[str, Any] = {"ratio_pix2pix_over_default_mae": {}}
    budgets = sorted({float(b) for r in runs.values() for b in r})
    for b in budgets:
        k = budget_key(b)
        p, d = _mae(res, "sat2dem_pix2pix", k), _mae(res, "demgen_default", k)
        if p is not None and d is not None and d > 0:
            out["ratio_pix2pix_over_default_mae"][k] = round(p / d, 3)
    ratios = out["ratio_pix2pix_over_default_mae"]
    out["quarter_at_every_budget"] = bool(ratios) and all(v >= 4 for v in ratios.values())
    free = {}
    for b in budgets:
        k = budget_key(b)
        p = _mae(res, "sat2dem_pix2pix", k, "mae_chip_level_free_m")
        d = _mae(res, "demgen_default", k, "mae_chip_level_free_m")
        if p is not None and d is not None and d > 0:
            free[k] = round(p / d, 3)
    if free:  # the same ratio once each held-out scene's level is removed
        out["ratio_pix2pix_over_default_level_free_mae"] = free
    pix = {float(b): e["held_out"]["mae_m"] for b, e in runs.get("sat2dem_pix2pix", {}).items()}
    dflt = {float(b): e["held_out"]["mae_m"] for b, e in runs.get("demgen_default", {}).items()}
    if pix and dflt:
        top = max(pix)
        ref = pix[top]
        reached = sorted(b for b, v in dflt.items() if v is not None and v <= ref)
        tta = reached[0] if reached else None
        out["time_to_accuracy"] = {
            "sat2dem_pix2pix_budget_min": top, "sat2dem_pix2pix_mae_m": ref,
            "demgen_default_first_budget_min": tta,
            "speedup": None if tta is None else round(top / tta, 2),
            "target_10x_met": tta is not None and tta <= top / 10 + 1e-9,
            "statement": (
                f"demgen_default reaches the held-out MAE sat2dem_pix2pix reaches in {top:g} min "
                f"({ref:.2f} m) within {tta:g} min ({top / tta:.1f}x)" if tta is not None else
                f"demgen_default reaches the sat2dem_pix2pix {top:g}-min MAE ({ref:.2f} m) at "
                "none of its budgets"
            ),
        }  # fmt: skip
    return out


def _ordered(res: dict) -> list[tuple[str, dict]]:
    """The recipes' runs in :data:`RECIPES` order (then any other name)."""
    runs = res.get("runs", {})
    names = [n for n in RECIPES if n in runs] + [n for n in runs if n not in RECIPES]
    return [(n, runs[n]) for n in names]


def table(res: dict) -> str:
    """A Markdown table per recipe and budget: held-out MAE, bias, the MAE with each held-out
    scene's level removed, RMSE, NMAD, slope RMSE, and the validation MAE."""
    lines = ["| recipe | minutes | epochs | MAE (m) | bias (m) | level-free MAE (m) | RMSE (m) "
             "| NMAD (m) | slope RMSE (deg) | val MAE (m) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    f = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731

    def cells(h: dict) -> str:
        return (f"{f(h.get('mae_m'))} | {f(h.get('bias_m'))} | "
                f"{f(h.get('mae_chip_level_free_m'))} | {f(h.get('rmse_m'))} | "
                f"{f(h.get('nmad_m'))} | {f(h.get('slope_rmse_deg'))}")  # fmt: skip

    for name, runs in _ordered(res):
        for b in sorted(runs, key=float):
            e = runs[b]
            lines.append(f"| {name} | {b} | {e['epochs']} | {cells(e['held_out'])} | "
                         f"{f(e.get('best_val_mae_m'))} |")  # fmt: skip
    for name, h in res.get("baselines", {}).items():
        lines.append(f"| baseline: {name} | - | - | {cells(h)} | - |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    """Held-out MAE (m) against training minutes (log x), one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    budgets: set[float] = set()
    for name, runs in _ordered(res):
        pts = sorted((float(b), e["held_out"]["mae_m"]) for b, e in runs.items()
                     if e["held_out"]["mae_m"] is not None)  # fmt: skip
        if not pts:
            continue
        budgets |= {p[0] for p in pts}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    styles = {"training_mean": ":", "linear_bands": "--"}
    for name, h in res.get("baselines", {}).items():
        if h.get("mae_m") is not None:
            ax.axhline(h["mae_m"], color="grey", ls=styles.get(name, "-."), lw=1,
                       label=f"baseline: {name}")  # fmt: skip
    ax.set_xscale("log")
    if budgets:
        ticks = sorted(budgets)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("training budget (minutes, wall clock)")
    ax.set_ylabel("held-out MAE (m)")
    ax.set_ylim(bottom=0)
    w = res.get("world", {})
    held = w.get("held_out", {}).get("chips")
    ax.set_title(f"Time to accuracy: {w.get('scenes')} x {w.get('size_px')} px synthetic "
                 f"scenes; {held} held-out scenes", fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def machine() -> dict[str, Any]:
    import torch

    from demgen.precision import cpu_flags, resolve_precision

    flags = cpu_flags()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
        "amx_tile": "amx_tile" in flags, "precision_auto": str(resolve_precision("auto")),
        "torch": torch.__version__, "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }  # fmt: skip


def _write(path: Path, res: dict) -> None:
    from demgen.io.jsonio import write_json

    res["summary"] = summarize(res)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, res)


def rescore(res: dict, args: argparse.Namespace) -> None:
    """Score each run's kept checkpoint again on the held-out store (and the baselines)."""
    from demgen.scoring import score_checkpoint
    from demgen.tasks import load_task

    reliefs = tuple(r.strip() for r in args.reliefs.split(",") if r.strip())
    world = build_world(args.work.resolve(), args.scenes, args.size, reliefs, args.held_out)
    for name, runs in res.get("runs", {}).items():
        for k, e in runs.items():
            ckpt = Path(e["run"]) / "checkpoints" / e["checkpoint"].split(" ")[0]
            if not ckpt.is_file():
                print(f"[tta] {name} {k} min: {ckpt} is gone, not rescored", flush=True)
                continue
            r = score_checkpoint(load_task(ckpt), world["held_store"], split="all",
                                 progress=False, baseline_store=world["stores"][256])  # fmt: skip
            e["held_out"] = {kk: r["methods"]["model"].get(kk) for kk in METRIC_KEYS}
            res["baselines"] = {b: {kk: v.get(kk) for kk in METRIC_KEYS}
                                for b, v in r["methods"].items() if b != "model"}  # fmt: skip
            print(f"[tta] {name} {k} min: rescored, MAE {e['held_out']['mae_m']:.2f} m", flush=True)


def _parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for it in items:
        recipe, _, kv = it.partition(":")
        key, eq, value = kv.partition("=")
        if recipe not in RECIPES or not eq or not key:
            raise SystemExit(f"--set {it!r}: expected RECIPE:dotted.key=value, RECIPE one of "
                             f"{', '.join(RECIPES)}")  # fmt: skip
        out.setdefault(recipe, {})[key] = yaml.safe_load(value)
    return out


def _settings_hash(s: dict) -> str:
    return hashlib.sha256(json.dumps(s, sort_keys=True, default=str).encode()).hexdigest()[:12]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="1,2,3,5,10,15,30",
                    help="minutes, comma-separated (one run to the largest, for the recipes "
                    "whose schedule does not know the budget)")  # fmt: skip
    ap.add_argument("--shaped-budgets", default="2,5,15,30",
                    help="minutes for recipes whose schedule is shaped to the budget (one run "
                    "each)")  # fmt: skip
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"subset of {list(RECIPES)}")
    ap.add_argument("--scenes", type=int, default=48, help="training-world scenes")
    ap.add_argument("--size", type=int, default=256, help="scene size, px (a multiple of 256)")
    ap.add_argument(
        "--reliefs",
        default=",".join(RELIEFS),
        help="reliefs of the world's scenes in turn, and of one held-out scene each",
    )
    ap.add_argument("--rescore", action="store_true",
                    help="with --report: score every kept checkpoint of --out again on the "
                    "held-out scenes (new metrics; nothing trains)")  # fmt: skip
    ap.add_argument(
        "--held-out",
        type=int,
        default=4,
        help="held-out scenes per relief (seeds 1000 + 100 x relief index + k)",
    )
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="other result files (e.g. of a second process) whose runs join --out",
    )
    ap.add_argument("--seed", type=int, default=1, help="seed_everything of every run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--set", action="append", default=[], metavar="RECIPE:KEY=VALUE",
                    help="override a config key of a recipe, e.g. "
                    "demgen_best:model.init_args.lr=0.004 (repeatable)")  # fmt: skip
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_time_to_accuracy")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    ap.add_argument("--report", action="store_true",
                    help="only the summary, table and plot of --out (no training)")  # fmt: skip
    args = ap.parse_args(argv)

    if args.report:
        res = json.loads(args.out.read_text())
        for other in args.merge:
            o = json.loads(other.read_text())
            if o.get("world") != res.get("world"):
                raise SystemExit(f"{other}: another world than {args.out}'s")
            for name, runs in o.get("runs", {}).items():
                res.setdefault("runs", {}).setdefault(name, {}).update(runs)
        if args.rescore:
            rescore(res, args)
        if args.merge or args.rescore:
            _write(args.out, res)
        res["summary"] = summarize(res)
        plot(res, args.plot)
        print(table(res), json.dumps(res["summary"], indent=1), sep="\n")
        return res

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)

    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    shaped = [float(b) for b in args.shaped_budgets.split(",") if b.strip()]
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"--recipes: unknown {unknown}; known {list(RECIPES)}")
    extra = _parse_set(args.set)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    reliefs = tuple(r.strip() for r in args.reliefs.split(",") if r.strip())
    world = build_world(work, args.scenes, args.size, reliefs, args.held_out)
    res: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    old_world = res.get("world", {})
    if (old_world.get("scenes"), old_world.get("size_px")) not in (
        (None, None),
        (args.scenes, args.size),
    ):
        raise SystemExit(f"{args.out} holds a {res['world']['scenes']} x "
                         f"{res['world']['size_px']} px world: give another --out")  # fmt: skip
    res.setdefault("what", "held-out DTM error against wall-clock training minutes (issue 16)")
    res["machine"] = machine()
    res["world"] = world["info"]
    res["seed_everything"] = args.seed
    res["common_changes"] = (
        "every recipe: max_epochs 1e6, early-stopping patience 1e6 (only max_time stops a run), "
        "num_sanity_val_steps 0, num_workers 0, augment on, seed_everything --seed, precision "
        "auto; the Sat2DEM recipes: batch 32 (their configs say 8), all four bands"
    )
    res["recipes"] = {n: {**recipe_settings(n, extra.get(n, {}), args.seed),
                          "what": RECIPES[n]["what"]} for n in RECIPES}  # fmt: skip
    res.setdefault("runs", {})
    t_all = time.time()
    for name in recipes:
        settings = recipe_settings(name, extra.get(name, {}), args.seed)
        todo = []
        for minutes in budgets if snapshots(settings) else shaped:
            k = budget_key(minutes)
            old = res["runs"].get(name, {}).get(k)
            if old and _settings_hash(old.get("settings", {})) == _settings_hash(settings):
                print(f"[tta] {name} {k} min: in {args.out}, skipped", flush=True)
            else:
                todo.append(minutes)
        groups = [todo] if snapshots(settings) and todo else [[m] for m in todo]
        for group in groups:
            print(f"[tta] {name} {', '.join(budget_key(m) for m in group)} min: training"
                  + (f" (one run to {max(group):g} min)" if len(group) > 1 else ""),
                  flush=True)  # fmt: skip
            entries, baselines = run_one(name, settings, group, world, work)
            res["runs"].setdefault(name, {}).update(entries)
            res.setdefault("baselines", baselines)
            _write(args.out, res)
            for k, entry in entries.items():
                h = entry["held_out"]
                print(f"[tta] {name} {k} min: {entry['epochs']} epochs, "
                      f"{entry['train_batches']} batches, held-out MAE {h['mae_m']:.2f} m, "
                      f"RMSE {h['rmse_m']:.2f} m, NMAD {h['nmad_m']:.2f} m, slope RMSE "
                      f"{h['slope_rmse_deg']:.2f} deg", flush=True)  # fmt: skip
    _write(args.out, res)
    plot(res, args.plot)
    print(table(res))
    print(json.dumps(res["summary"], indent=1))
    print(f"[tta] done in {time.time() - t_all:.0f} s: {args.out}, {args.plot}", flush=True)
    return res


if __name__ == "__main__":
    main()
