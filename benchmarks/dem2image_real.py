"""DEM -> image on the real samples of ../shared/realdata, beside both baselines.

Two datasets, each trained for the same wall-clock budget (``--minutes``) with the U-Net
recipe of ``configs/synthesis/dem2image_unet_store.yaml`` and scored with ``demgen test``'s
scorer (:func:`demgen.scoring.score_checkpoint`): the model, the mean training image and the
per-pixel linear regression on the relief (height, slope, aspect, hillshade), in
"reflectance" (stored value / 255 for these uint8 images) at data range 1: PSNR, SSIM, SAM,
ERGAS, MAE and fd_demgen_rand.

1. Landsat 5 TM + SRTM (Amazon basin, 287 x 310 px at 30 m): the per-band files
   ``LT52240631988227CUB02_B1..B7.TIF`` go to ``prepare_rasters`` as they are (single-band
   files sharing a stem form one scene, bands named by their ``_B<n>`` suffix) with bands
   B1 B2 B3 B4 B5 B7 (thermal B6 left out), the SRTM DEM on the same grid, 64-px chips,
   global elevation normalization, a blocked 70/15/15 split. The scene is 4 x 4 chips:
   prepare shrinks the blocks to single chips (``min_blocks`` 6), and the buffer is 0,
   since the default one-chip buffer drops every val/test chip (each touches a training
   chip on so small a grid). Trained with ``demgen fit`` on that config, the sun of the scene
   (azimuth 62.0, elevation 49.8 degrees: RStoolbox's solar angles for it); scored on test
   and val.
2. ImageToDEM chips (Sentinel-2 RGB median composite, ALOS AW3D30 heights scaled 0..255 by
   an unknown min/max, 256 px, no georeferencing): trained on ``set_b`` (16 chips, a random
   80/20 train/val split) and tested on all of ``set_a`` (10 other chips), the baselines
   fitted on set_b's training chips. An .npz store has no pixel size (``demgen fit`` would
   link None, relief at 1 m), so the task is built in Python with ``pixel_size`` 30 m (the
   AW3D30 grid) and trained with a plain Lightning Trainer, same recipe; heights are
   relative units, so slopes and hillshade are only relative.

Both samples are tiny (11 and 13 training chips), far too few to train a useful model. The
numbers say whether the pipeline runs end to end on real data and how the model compares
with the baselines on these chips, not how well DEM -> image works.

Writes ``benchmarks/dem2image_real.json``; exits 0 with a message when ../shared/realdata
is absent.

    .venv/bin/python benchmarks/dem2image_real.py                # 3 min a dataset
    .venv/bin/python benchmarks/dem2image_real.py --minutes 1
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

from demgen.data.chips import ChipStore  # noqa: E402
from demgen.data.prepare import PrepareConfig, prepare_npz, prepare_rasters  # noqa: E402
from demgen.io.checkpoint import read_checkpoint  # noqa: E402
from demgen.io.jsonio import write_json  # noqa: E402
from demgen.precision import resolve_precision  # noqa: E402
from demgen.scoring import score_checkpoint  # noqa: E402
from demgen.tasks.registry import load_task  # noqa: E402
from demgen.training import fit  # noqa: E402

REAL = ROOT.parent / "shared" / "realdata"
CONFIG = ROOT / "configs" / "synthesis" / "dem2image_unet_store.yaml"
LANDSAT = "LT52240631988227CUB02"
LANDSAT_BANDS = ["B1", "B2", "B3", "B4", "B5", "B7"]  # B6 (thermal) left out
# The scene's sun: RStoolbox's topCor example gives solarAngles c(1.081533, 0.7023922) rad
# (azimuth, zenith) for it, i.e. azimuth 62.0 and elevation 49.8 degrees.
LANDSAT_SUN = (62.0, 49.8)
IMAGETODEM_PIXEL_M = 30.0  # ALOS AW3D30's grid; the chips carry no georeferencing
KEYS = ("psnr_db", "ssim", "sam_deg", "ergas", "mae", "fd_demgen_rand")
SCORES_NOTE = (
    "The val chips chose best.ckpt and drove the learning-rate schedule, so the val scores "
    "are optimistic for the model (not for the baselines); the test chips were never seen. "
    "epochs: full passes over the training chips (steps // batches per epoch)."
)
TITLES = {"model": "U-Net (model)", "training_mean_image": "mean training image",
          "linear_relief": "linear relief"}  # fmt: skip


def _hms(minutes: float) -> str:
    s = int(round(minutes * 60))
    return f"00:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _counts(store: Path) -> dict:
    sp = ChipStore(store).manifest["splits"]
    return {k: len(sp.get(k) or []) for k in ("train", "val", "test", "excluded")}


def _pick(r: dict) -> dict:
    out = {m: {k: v.get(k) for k in KEYS} for m, v in r["methods"].items()}
    out["chips"] = r["chips"]
    out["valid_px"] = r["methods"]["model"].get("valid_px")
    note = r["methods"]["model"].get("fd_demgen_rand_note")
    if note:
        out["fd_demgen_rand_note"] = note
    return out


def _epochs(steps: int, n_train: int) -> int:
    """Full passes over the training chips in ``steps`` batches of the recipe's size (a
    budget stopped by max_time ends mid-epoch)."""
    batch = int(_recipe()["data"]["init_args"]["batch_size"])
    return steps // -(-n_train // batch)


def _recipe() -> dict:
    """The store recipe (its ``model``, ``data`` and ``trainer`` sections)."""
    return yaml.safe_load(CONFIG.read_text())


# ---------------------------------------------------------------- Landsat 5 + SRTM
def landsat(work: Path, minutes: float) -> dict:
    bands = [REAL / f"{LANDSAT}_{b}.TIF" for b in LANDSAT_BANDS]
    store = work / "stores" / "landsat5_srtm"
    cfg = PrepareConfig(chip_size=64, bands=LANDSAT_BANDS, normalize="global",
                        fractions=(0.7, 0.15, 0.15), buffer=0.0)  # fmt: skip
    t0 = time.time()
    prepare_rasters(bands, [REAL / "amazon_landsat5_srtm_dem.tif"], store, cfg, overwrite=True)
    prep_s = time.time() - t0
    manifest = ChipStore(store).manifest
    n = _counts(store)
    e = manifest["normalization"]["elevation"]
    args = ["--config", str(CONFIG), "--data.store", str(store),
            "--run_root", str(work / "runs"), "--run_name", "landsat5_srtm",
            "--trainer.max_time", _hms(minutes), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--model.init_args.sun_azimuth", str(LANDSAT_SUN[0]),
            "--model.init_args.sun_elevation", str(LANDSAT_SUN[1])]  # fmt: skip
    t0 = time.time()
    run = Path(fit(args))
    train_s = time.time() - t0
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    best = run / "checkpoints" / "best.ckpt"
    task = load_task(best)
    scores = {
        split: _pick(score_checkpoint(task, store, split=split, progress=False))
        for split in ("test", "val")
    }
    return {
        "what": "Landsat 5 TM (1988-08-14, Amazon basin) DN bands from SRTM heights in metres",
        "sources": [f"{LANDSAT}_{b}.TIF" for b in LANDSAT_BANDS] + ["amazon_landsat5_srtm_dem.tif"],
        "bands": LANDSAT_BANDS,
        "grid_px": [
            manifest["scenes"][0]["grid"].get("width"),
            manifest["scenes"][0]["grid"].get("height"),
        ],  # fmt: skip
        "pixel_size_m": manifest["pixel_size_m"],
        "chip_size": 64,
        "elevation_normalization": manifest["normalization"]["elevation"],
        "split": {
            "fractions": [0.7, 0.15, 0.15],
            "block_chips": manifest["splits"]["block"],
            "buffer_chips": 0.0,
            "note": "4 x 4 chips: blocks shrink to one chip (min_blocks 6); the default "
            "1-chip buffer would drop every val and test chip",
        },  # fmt: skip
        "chips": n,
        "sun_azimuth_deg": LANDSAT_SUN[0],
        "sun_elevation_deg": LANDSAT_SUN[1],
        "trained_with": "demgen fit --config configs/synthesis/dem2image_unet_store.yaml",
        "prepare_seconds": round(prep_s, 1),
        "train_seconds": round(train_s, 1),
        "epochs": _epochs(int(last["global_step"]), n["train"]),
        "steps": int(last["global_step"]),
        "best_checkpoint_epoch": int(read_checkpoint(best)["epoch"]),
        "scores": scores,
        "scores_note": SCORES_NOTE,
        "caveat": (
            f"One 287 x 310 px scene: {len(ChipStore(store))} chips of 64 px ({n['train']} train, "
            f"{n['val']} val, {n['test']} test), split by single chips without a buffer, so val "
            f"and test chips touch training chips; the test score rests on {n['test']} chips "
            f"and the val score on {n['val']}. Images are uint8 DN scaled by 1/255 (not "
            f"reflectance); the terrain is gentle (training heights {e['vmin']:.0f} to "
            f"{e['vmax']:.0f} m), so the land cover (forest, clearings, river), not the relief, "
            "sets most of the image. Far too small to train "
            "a useful model: this shows that the pipeline runs on real data and how the model "
            "and the baselines compare on these chips, not how well DEM -> image works."
        ),
    }


# ---------------------------------------------------------------- ImageToDEM chips
def _train_direct(store: Path, out: Path, minutes: float) -> tuple[Path, dict]:
    """The store recipe trained with a plain Trainer, ``pixel_size`` given (.npz stores
    have none for ``demgen fit`` to link)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from demgen.data.datamodule import ChipDataModule
    from demgen.tasks.dem2image import Dem2ImageTask

    shutil.rmtree(out, ignore_errors=True)  # a fresh best.ckpt, not best-v1.ckpt
    recipe = _recipe()
    data_args = dict(recipe["data"]["init_args"])
    data_args["store"] = str(store)
    L.seed_everything(int(recipe.get("seed_everything", 0)), verbose=False)
    dm = ChipDataModule(**data_args)
    norms = dm.normalization
    task = Dem2ImageTask(
        norms["image"], norms["elevation"], chip_size=int(dm.store.manifest["chip_size"]),
        pixel_size=IMAGETODEM_PIXEL_M, vertical_crs=dm.vertical_crs,
        image_dtype=str(dm.store.manifest["image_dtype"]), **recipe["model"]["init_args"],
    )  # fmt: skip
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=task.monitor,
                           mode="min", save_top_k=1, save_last=True)  # fmt: skip
    trainer = L.Trainer(
        max_epochs=int(recipe["trainer"]["max_epochs"]), max_time=timedelta(minutes=minutes),
        num_sanity_val_steps=0, log_every_n_steps=1, callbacks=[ckpt],
        logger=CSVLogger(out, name="", version=""), enable_progress_bar=False,
        enable_model_summary=False, precision=resolve_precision("auto"),
        default_root_dir=out,
    )  # fmt: skip
    trainer.fit(task, dm)
    best = read_checkpoint(ckpt.best_model_path)
    n_train = len(dm.store.indices("train"))
    steps = int(trainer.global_step)
    info = {"epochs": _epochs(steps, n_train), "steps": steps,
            "best_checkpoint_epoch": int(best["epoch"])}  # fmt: skip
    return Path(ckpt.best_model_path), info


def imagetodem(work: Path, minutes: float) -> dict:
    d = REAL / "imagetodem"
    train_store = work / "stores" / "imagetodem_set_b"
    test_store = work / "stores" / "imagetodem_set_a"
    for src, out, fractions in (("set_b", train_store, (0.8, 0.2, 0.0)),
                                ("set_a", test_store, (1.0, 0.0, 0.0))):  # fmt: skip
        cfg = PrepareConfig(normalize="global", fractions=fractions)
        prepare_npz([d / f"{src}.npz"], out, cfg, overwrite=True)
    n = {**{k: v for k, v in _counts(train_store).items() if k != "test"},
         "test": len(ChipStore(test_store))}  # fmt: skip
    t0 = time.time()
    best, info = _train_direct(train_store, work / "runs" / "imagetodem", minutes)
    train_s = time.time() - t0
    task = load_task(best)
    scores = {
        "set_a_all": _pick(score_checkpoint(task, test_store, split="all",
                                            baseline_store=train_store, progress=False)),
        "set_b_val": _pick(score_checkpoint(task, train_store, split="val", progress=False)),
    }  # fmt: skip
    manifest = ChipStore(train_store).manifest
    return {
        "what": "ImageToDEM chips: Sentinel-2 RGB (uint8) from ALOS AW3D30 relative heights",
        "sources": ["imagetodem/set_b.npz (train, val)", "imagetodem/set_a.npz (test)"],
        "bands": manifest["normalization"]["image"]["bands"],
        "chip_size": int(manifest["chip_size"]),
        "pixel_size_m": IMAGETODEM_PIXEL_M,
        "pixel_size_note": "assumed (AW3D30 is a 30 m grid); the chips carry no georeferencing",
        "z_unit": "relative (0..255 of an unknown global min/max, treated as metres)",
        "elevation_normalization": manifest["normalization"]["elevation"],
        "sun_azimuth_deg": float(task.hparams.sun_azimuth),
        "sun_elevation_deg": float(task.hparams.sun_elevation),
        "sun_note": "the task's default sun: a median composite has no single sun",
        "split": {"set_b": "random per chip, 80/20 train/val", "set_a": "all chips (test)"},
        "chips": n,
        "trained_with": "Dem2ImageTask with the dem2image_unet_store.yaml recipe, "
        "pixel_size 30 m, lightning.Trainer",  # fmt: skip
        "train_seconds": round(train_s, 1),
        **info,
        "scores": scores,
        "scores_note": SCORES_NOTE,
        "caveat": (
            f"{n['train'] + n['val'] + n['test']} chips in all ({n['train']} train, {n['val']} "
            f"val from set_b; {n['test']} test from set_a). The heights are "
            "relative units (0..255 of an unknown global range, stored as uint8) and the pixel "
            "size is assumed 30 m (AW3D30), so slope, aspect, hillshade and sky view, in the "
            "model's features and in the linear-relief baseline alike, are only relative; "
            "the sun of the hillshade is a guess (a median composite has none). Images are "
            "uint8 RGB scaled by 1/255. Far too small to train a useful model: this shows "
            "that the pipeline runs on these chips and how the model and the baselines "
            "compare on them."
        ),
    }


def _table(result: dict) -> str:
    lines = ["| dataset | split | method | PSNR dB | SSIM | SAM deg | ERGAS | MAE | FD rand |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip

    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    for name, ds in result["datasets"].items():
        for split, s in ds["scores"].items():
            for m in ("model", "training_mean_image", "linear_relief"):
                v = s[m]
                lines.append(
                    f"| {name} | {split} ({s['chips']} chips) | {TITLES[m]} | "
                    f"{f(v['psnr_db'], '.2f')} | {f(v['ssim'], '.3f')} | "
                    f"{f(v['sam_deg'], '.2f')} | {f(v['ergas'], '.2f')} | "
                    f"{f(v['mae'], '.4f')} | {f(v['fd_demgen_rand'], '.4g')} |"
                )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per dataset")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_dem2image_real")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "dem2image_real.json")
    ap.add_argument("--only", choices=("landsat", "imagetodem"), help="one dataset")
    args = ap.parse_args()
    if not REAL.is_dir():
        print(f"[bench] {REAL} is absent: nothing to do (the real samples are not shipped)")
        return 0
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "what": "DEM -> image (U-Net recipe) on the real samples, beside the mean training "
        "image and the per-pixel linear regression on relief",  # fmt: skip
        "scorer": "demgen.scoring.score_checkpoint (demgen test): reflectance = stored value "
        "/ 255 (uint8), data range 1; baselines fitted on the training split",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "precision": resolve_precision("auto"),
        },  # fmt: skip
        "minutes_per_dataset": args.minutes,
        "datasets": {},
    }
    runs = {"landsat5_srtm": landsat, "imagetodem": imagetodem}
    for name, fn in runs.items():
        if args.only and not name.startswith(args.only):
            continue
        t0 = time.time()
        result["datasets"][name] = fn(work / name, args.minutes)
        print(f"[bench] {name}: done in {time.time() - t0:.0f} s", flush=True)
    write_json(args.out, result)
    print(json.dumps(result, indent=1, default=str))
    print(_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
