"""How much a random tile split flatters the held-out MAE against a blocked one.

Published tile datasets (Sat2DEM: 256 x 256 tiles with random train/validation/test
lists) put neighbouring tiles, which share ridges, valleys and texture, on both sides of
the split. This benchmark synthesizes a world (``demgen.data.synth``), cuts it into tiles
exactly in Sat2DEM's layout (``sat/sat_<n>.tif``, ``dem/dem_<n>.tif``,
``dataset_splits.json`` with a random ``split_1``), imports it twice with
:func:`demgen.data.tiles.import_tiles` (the published random split; demgen's blocked
split with a one-tile buffer), trains the same small U-Net for the same number of epochs
on each, and reports the best validation MAE in metres (the held-out tiles of each
split), and reports for each the best validation MAE in metres (what a user of that split
would report: its held-out tiles) beside the MAE of the same checkpoint on a scene neither
model saw any tile of (``demgen test`` on a store of that scene's tiles, ``--split all``).
The ratio of the two is how much each split's own validation flatters the model. Writes
``benchmarks/leakage.json``.

    .venv/bin/python benchmarks/leakage.py --quick   # 2 scenes of 256 px, 32-px tiles, 3 epochs
    .venv/bin/python benchmarks/leakage.py           # 4 scenes of 512 px, 64-px tiles, 15 epochs
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from demgen.data.prepare import PrepareConfig  # noqa: E402
from demgen.data.synth import SceneConfig, generate_scene  # noqa: E402
from demgen.data.tiles import import_tiles  # noqa: E402
from demgen.io.raster import read_raster, write_raster  # noqa: E402
from demgen.training import fit  # noqa: E402


def cut_tiles(world: Path, scenes: list[Path], tile: int, seed: int) -> int:
    """Write the scenes as Sat2DEM-layout tiles; a random split_1 like the published one."""
    return _write_tiles(world, scenes, tile, seed, with_split=True)


def _write_tiles(world: Path, scenes: list[Path], tile: int, seed: int, with_split: bool) -> int:
    n = 0
    for scene in scenes:
        img, prof = read_raster(scene / "image.tif")
        dtm, _ = read_raster(scene / "dtm.tif")
        t = prof["transform"]
        for r in range(0, img.shape[1] - tile + 1, tile):
            for c in range(0, img.shape[2] - tile + 1, tile):
                tt = t * t.translation(c, r)
                kw = {"crs": prof["crs"], "transform": tt}
                write_raster(world / "sat" / f"sat_{n}.tif", img[:, r : r + tile, c : c + tile],
                             descriptions=prof["descriptions"], **kw)  # fmt: skip
                write_raster(world / "dem" / f"dem_{n}.tif", dtm[0, r : r + tile, c : c + tile],
                             **kw)  # fmt: skip
                n += 1
    if not with_split:
        return n
    ids = np.random.default_rng(seed).permutation(n).tolist()
    a, b = int(0.7 * n), int(0.85 * n)
    split = {"train": ids[:a], "validation": ids[a:b], "test": ids[b:]}
    (world / "dataset_splits.json").write_text(json.dumps({"split_1": split}))
    return n


def train(store: Path, runs: Path, epochs: int, name: str, depth: int) -> dict:
    cfg = runs / f"{name}.yaml"
    cfg.write_text(
        "seed_everything: 0\n"
        f"trainer: {{max_epochs: {epochs}, log_every_n_steps: 5}}\n"
        "model:\n  class_path: demgen.tasks.regression.DEMRegressionTask\n"
        f"  init_args: {{base: 16, depth: {depth}, stem: 4, max_width: 128, lr: 0.002, loss: l1,\n"
        "              target: dtm, pixel_size: 10.0}\n"
        "data:\n  class_path: demgen.data.datamodule.ChipDataModule\n"
        f"  init_args: {{store: {store}, batch_size: 8, num_workers: 0, augment: true}}\n"
        f"run_name: {name}\n"
    )
    t0 = time.time()
    run = fit(["--config", str(cfg), "--run_root", str(runs), "--trainer.enable_progress_bar",
               "false", "--trainer.enable_model_summary", "false"], log=None)  # fmt: skip
    with open(run / "metrics.csv") as f:
        maes = [float(r["val_mae_m"]) for r in csv.DictReader(f) if r.get("val_mae_m")]
    return {"best_val_mae_m": min(maes), "epochs": len(maes), "train_s": time.time() - t0,
            "checkpoint": str(run / "checkpoints" / "best.ckpt")}  # fmt: skip


def unseen_mae(checkpoint: str, held_store: Path, train_store: Path) -> float:
    """MAE (m) of ``checkpoint`` on every chip of the unseen scene's store."""
    from demgen.scoring import score_checkpoint
    from demgen.tasks import load_task

    r = score_checkpoint(load_task(checkpoint), held_store, split="all", progress=False,
                         baseline_store=train_store)  # fmt: skip
    return float(r["methods"]["model"]["mae_m"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small world, minutes on 2 cores")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "leakage.json")
    args = ap.parse_args()
    # the U-Net's bottleneck is tile / 4 (stem) / 2**depth px: keep it at least 2 x 2
    size, n_scenes, tile, epochs, depth = (256, 2, 32, 3, 2) if args.quick else (512, 4, 64, 15, 3)
    tmp = Path(tempfile.mkdtemp(prefix="leakage-"))
    try:
        scenes = [generate_scene(tmp / f"scene_{i}", SceneConfig(size=size, seed=100 + i))
                  for i in range(n_scenes + 1)]  # fmt: skip
        world, held = tmp / "world", tmp / "held"
        n = cut_tiles(world, scenes[:-1], tile, seed=0)
        _write_tiles(held, scenes[-1:], tile, seed=0, with_split=False)
        cfg = PrepareConfig(block=2, buffer=1.0, min_blocks=6)
        random_store = import_tiles(world / "sat", world / "dem", tmp / "random", cfg,
                                    world / "dataset_splits.json", "split_1")  # fmt: skip
        blocked_store = import_tiles(world / "sat", world / "dem", tmp / "blocked", cfg)
        held_store = import_tiles(held / "sat", held / "dem", tmp / "held_store", cfg)
        runs = tmp / "runs"
        runs.mkdir()
        res = {
            "random": train(random_store, runs, epochs, "random", depth),
            "blocked": train(blocked_store, runs, epochs, "blocked", depth),
        }
        for k, store in (("random", random_store), ("blocked", blocked_store)):
            sp = json.loads((store / "manifest.json").read_text())["splits"]
            res[k].update({s: len(sp[s]) for s in ("train", "val", "test", "excluded")})
            res[k]["unseen_scene_mae_m"] = unseen_mae(res[k].pop("checkpoint"), held_store, store)
            # > 1: the split's own validation promised better than unseen ground delivers
            res[k]["unseen_over_val_mae"] = res[k]["unseen_scene_mae_m"] / res[k]["best_val_mae_m"]
        flatter = res["blocked"]["best_val_mae_m"] / res["random"]["best_val_mae_m"]
        report = {
            "mode": "quick" if args.quick else "full",
            "world": {"scenes": n_scenes, "size_px": size, "tile_px": tile, "tiles": n,
                      "pixel_size_m": 10.0, "relief": "hills",
                      "unseen_scene_seed": 100 + n_scenes},
            "epochs": epochs,
            "results": res,
            "blocked_over_random_mae": flatter,
        }  # fmt: skip
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
