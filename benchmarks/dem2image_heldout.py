"""DEM -> image on held-out synthetic scenes, beside both baselines, and the consistency check.

1. Trains the two recipes of ``configs/synthesis/`` (U-Net regressor and pix2pix) for the
   same wall-clock budget each, and the image -> DEM demo model (``configs/demo.yaml``,
   the same synthetic world: 8 hilly 512-px scenes of seed 1), unless ``--demo-ckpt`` gives
   one (``make demo`` writes ``runs/demo-*/model.ckpt``).
2. Synthesizes held-out scenes from seeds the world never used (hills, 512 px, 10 m) and
   scores every DEM -> image checkpoint with ``demgen test``'s scorer on their chips
   (``--split all``; the baselines fitted on the training store): the model, the mean
   training image and the per-pixel linear regression on height, slope, aspect and
   hillshade, in reflectance at data range 1 (PSNR, SSIM, SAM, ERGAS, fd_demgen_rand).
3. Predicts each held-out scene whole from its DTM (``predict_scene``: blended windows) and
   scores it with ``demgen evaluate``'s image path.
4. Consistency: the image -> DEM model on the synthesized image of each held-out DTM, and
   on the true image of the same scene: the height MAE it recovers from each (a
   synthesizer that draws relief correctly keeps the two close).

Writes ``benchmarks/dem2image_heldout.json``.

    .venv/bin/python benchmarks/dem2image_heldout.py                  # 6 min a recipe
    .venv/bin/python benchmarks/dem2image_heldout.py --demo-ckpt runs/demo-*/model.ckpt
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from demgen.data.prepare import PrepareConfig, prepare_rasters  # noqa: E402
from demgen.data.synth import SceneConfig, generate_scene  # noqa: E402
from demgen.evaluate import evaluate_dem  # noqa: E402
from demgen.evaluation_image import evaluate_image  # noqa: E402
from demgen.inference.scene import predict_scene  # noqa: E402
from demgen.io.jsonio import write_json  # noqa: E402
from demgen.precision import resolve_precision  # noqa: E402
from demgen.scoring import score_checkpoint  # noqa: E402
from demgen.tasks.registry import load_task  # noqa: E402
from demgen.training import fit  # noqa: E402

RECIPES = {
    "unet": "configs/synthesis/dem2image_unet.yaml",
    "pix2pix": "configs/synthesis/dem2image_pix2pix.yaml",
}
HELD_OUT_SEEDS = (1000, 1001)
KEYS = ("psnr_db", "ssim", "sam_deg", "ergas", "mae", "fd_demgen_rand")


def _hms(minutes: float) -> str:
    s = int(round(minutes * 60))
    return f"00:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def previous_seconds(out: Path, name: str) -> float | None:
    """The training seconds an earlier result recorded for ``name`` (a reused run)."""
    try:
        return float(json.loads(out.read_text())["training"][name]["seconds"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def epochs(ckpt: Path) -> int:
    """Epochs a run trained (its last checkpoint's epoch counter)."""
    import torch

    last = ckpt.with_name("last.ckpt")
    return int(torch.load(last, map_location="cpu", weights_only=True)["epoch"]) + 1


REUSE: set[str] = set()  # --reuse NAME: that run's newest best.ckpt stands for its training


def train(config: str, name: str, work: Path, minutes: float) -> Path:
    """``demgen fit`` of one recipe for ``minutes``; returns its best checkpoint (with
    ``--reuse NAME``, the newest existing one of that run name)."""
    done = sorted((work / "runs" / name).glob("version_*/checkpoints/best.ckpt"))
    if name in REUSE and done:
        print(f"[bench] {name}: reusing {done[-1]}", flush=True)
        return done[-1]
    args = ["--config", str(ROOT / config), "--run_root", str(work / "runs"), "--run_name", name,
            "--data.init_args.cache_dir", str(work / "cache"), "--trainer.max_time",
            _hms(minutes), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    t0 = time.time()
    run = fit(args)
    print(f"[bench] {name}: trained {time.time() - t0:.0f} s in {run}", flush=True)
    return Path(run) / "checkpoints" / "best.ckpt"


def store_of(ckpt: Path) -> Path:
    """The chip store a checkpoint trained on (its data module's saved state)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for value in state.values():
        if isinstance(value, dict) and isinstance(value.get("store"), str):
            return Path(value["store"])
    raise SystemExit(f"{ckpt}: no chip store recorded")


def _pick(m: dict) -> dict:
    return {k: m.get(k) for k in KEYS}


def render_table(r: dict) -> str:
    """The README tables of a result: held-out chips (model and both baselines per recipe)
    and the consistency check."""
    titles = {"model": "model", "training_mean_image": "mean training image",
              "linear_relief": "linear regression on relief"}  # fmt: skip
    lines = ["| recipe | method | PSNR (dB) | SSIM | SAM (deg) | fd_demgen_rand |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name in RECIPES:
        for m, title in titles.items():
            v = r["chips"][name][m]
            lines.append(f"| {name} | {title} | {v['psnr_db']:.2f} | {v['ssim']:.3f} | "
                         f"{v['sam_deg']:.2f} | {v['fd_demgen_rand']:.3f} |")  # fmt: skip
    lines += ["", "| held-out scene | heights from the true image | "
              + " | ".join(f"from the {n} image" for n in RECIPES) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in RECIPES) + " |"]  # fmt: skip
    for scene, v in r["consistency"].items():
        cells = " | ".join(f"{v[f'from_{n}_image_mae_m']:.1f} m" for n in RECIPES)
        lines.append(f"| {scene} | {v['from_true_image_mae_m']:.1f} m | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=6.0, help="training budget per recipe")
    ap.add_argument("--pix2pix-minutes", type=float, default=None,
                    help="budget of the GAN recipe (default --minutes)")  # fmt: skip
    ap.add_argument("--demo-minutes", type=float, default=7.0)
    ap.add_argument("--demo-ckpt", type=Path, default=None, help="an image -> DEM checkpoint")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_dem2image")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "dem2image_heldout.json")
    ap.add_argument("--table", action="store_true", help="only print the tables of --out")
    ap.add_argument("--reuse", nargs="*", default=[], metavar="NAME",
                    help="run names whose checkpoint to reuse (dem2image_unet ...)")  # fmt: skip
    args = ap.parse_args()
    REUSE.update(args.reuse)
    if args.table:
        print(render_table(json.loads(args.out.read_text())), end="")
        return
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    size, seeds = 512, HELD_OUT_SEEDS

    ckpts, train_s = {}, {}
    for name, config in RECIPES.items():
        t0 = time.time()
        minutes = (
            args.pix2pix_minutes if name == "pix2pix" and args.pix2pix_minutes else args.minutes
        )
        ckpts[name] = train(config, f"dem2image_{name}", work, minutes)
        seconds = previous_seconds(args.out, name) if f"dem2image_{name}" in REUSE else None
        train_s[name] = {"seconds": seconds or round(time.time() - t0, 1),
                         "epochs": epochs(ckpts[name]), "minutes": minutes}  # fmt: skip
    demo = args.demo_ckpt or train("configs/demo.yaml", "demo", work, args.demo_minutes)

    task0 = load_task(ckpts["unet"])
    train_store = store_of(ckpts["unet"])
    scenes = [generate_scene(work / "heldout" / f"hills_{s}",
                             SceneConfig(size=size, seed=s, relief="hills", pixel_size=10.0))
              for s in seeds]  # fmt: skip
    held_store = work / "heldout" / "store"
    if not (held_store / "manifest.json").exists():
        prepare_rasters([s / "image.tif" for s in scenes], [s / "dtm.tif" for s in scenes],
                        held_store, PrepareConfig(chip_size=int(task0.hparams.chip_size),
                                                  fractions=(1.0, 0.0, 0.0), block=1))  # fmt: skip

    result: dict = {
        "what": "DEM -> image on held-out synthetic hills scenes (seeds never trained on)",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "precision": resolve_precision("auto"),
        },  # fmt: skip
        "minutes_per_recipe": {
            n: args.pix2pix_minutes if n == "pix2pix" and args.pix2pix_minutes else args.minutes
            for n in RECIPES
        },  # fmt: skip
        "training": train_s,
        "note": "wall-clock budgets on a 2-core machine that other jobs may share: compare "
        "the epochs, not only the minutes",
        "held_out_seeds": list(seeds),
        "scene_size_px": size,
        "chips": {},
        "scenes": {},
        "consistency": {},
    }
    demo_task = load_task(demo)
    for name, ckpt in ckpts.items():
        task = load_task(ckpt)
        r = score_checkpoint(task, held_store, split="all", baseline_store=train_store,
                             progress=False)  # fmt: skip
        result["chips"][name] = {m: _pick(v) for m, v in r["methods"].items()}
        result["chips"]["n_chips"] = r["chips"]
        for scene in scenes:
            out = work / f"image_{name}_{scene.name}.tif"
            pred = predict_scene(task, {"dem": scene / "dtm.tif"}, out, progress=False)
            m = evaluate_image(pred, scene / "image.tif")
            result["scenes"].setdefault(name, {})[scene.name] = _pick(m)
            # consistency: heights recovered from the synthesized image vs the true one
            synth_dtm = predict_scene(demo_task, pred, work / f"dtm_from_{name}_{scene.name}.tif",
                                      progress=False)  # fmt: skip
            mae = evaluate_dem(synth_dtm, scene / "dtm.tif")["mae_m"]
            result["consistency"].setdefault(scene.name, {})[f"from_{name}_image_mae_m"] = mae
    for scene in scenes:
        out = work / f"dtm_from_true_{scene.name}.tif"
        true_dtm = predict_scene(demo_task, scene / "image.tif", out, progress=False)
        result["consistency"][scene.name]["from_true_image_mae_m"] = evaluate_dem(
            true_dtm, scene / "dtm.tif")["mae_m"]  # fmt: skip
    result["demo_checkpoint"] = str(demo)
    write_json(args.out, result)
    args.out.with_suffix(".md").write_text(render_table(result))
    print(json.dumps(result, indent=1, default=str))
    print(render_table(result))


if __name__ == "__main__":
    main()
