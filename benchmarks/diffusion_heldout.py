"""Conditional diffusion on held-out synthetic data: calibration, and beside the GANs (issue 14).

Three parts (``--parts``), each training a recipe of ``configs/diffusion/`` for ``--minutes``
of wall clock and scoring it on scenes of seeds no training ever used:

- ``image2dem``: ``image2dem_small`` and, for the same minutes on the same chip store, the
  U-Net regressor of ``configs/demo.yaml`` (only its world made the diffusion's: 8 hilly
  256-px scenes of seed 1, 64-px chips). Each held-out hilly scene (seeds 1000, 1001;
  ``--size`` px) is sampled whole ``--samples`` times (:func:`sample_scene`, seed 0): the MAE
  and RMSE of the samples' mean and of one sample, and the calibration of their spread: the
  fraction of true heights within mean +- 1 and 2 standard deviations, beside the 68.3 % and
  95.4 % of a calibrated Gaussian and beside what a calibrated model gives with N samples
  (the truth is then one more draw: ``(truth - mean) / s ~ sqrt(1 + 1/N) t_{N-1}``, so the
  fractions are ``P(|t_{N-1}| < k / sqrt(1 + 1/N))``, 62.3 % and 89.9 % for N = 8), and the
  error by spread quartile (a useful spread ranks the errors). The regressor's scene MAE
  comes from ``predict_scene``.
- ``dem2image``: ``dem2image_small`` on the world of ``configs/synthesis/`` (8 hilly 512-px
  scenes of seed 1, 64-px chips), scored with ``demgen test``'s scorer on the held-out
  store of ``benchmarks/dem2image_heldout.py`` (seeds 1000, 1001; built the same way if
  absent), beside the rows that benchmark recorded for the U-Net, pix2pix and baselines.
- ``temporal``: ``temporal_small`` on the world of ``configs/temporal/`` (6 plains places of
  256 px), scored on the held-out time store of ``benchmarks/temporal_heldout.py`` with its
  segmenter, beside the rows that benchmark recorded.

Writes ``benchmarks/diffusion_heldout.json`` (after every part; ``--parts`` runs some).

    .venv/bin/python benchmarks/diffusion_heldout.py --minutes 10
    .venv/bin/python benchmarks/diffusion_heldout.py --parts image2dem --minutes 10 --samples 8
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from demgen.data.prepare import PrepareConfig, prepare_rasters  # noqa: E402
from demgen.data.synth import SceneConfig, generate_scene  # noqa: E402
from demgen.evaluate import evaluate_dem  # noqa: E402
from demgen.inference.sampling import sample_scene, std_file  # noqa: E402
from demgen.inference.scene import predict_scene  # noqa: E402
from demgen.io.jsonio import write_json  # noqa: E402
from demgen.io.raster import NODATA, open_raster  # noqa: E402
from demgen.precision import resolve_precision  # noqa: E402
from demgen.scoring import score_checkpoint  # noqa: E402
from demgen.tasks.registry import load_task  # noqa: E402
from demgen.training import fit  # noqa: E402

HELD_OUT_SEEDS = (1000, 1001)
PARTS = ("image2dem", "dem2image", "temporal")
IMAGE_KEYS = ("psnr_db", "ssim", "sam_deg", "ergas", "mae", "fd_demgen_rand")


def _hms(minutes: float) -> str:
    s = int(round(minutes * 60))
    return f"00:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def train(config: str, name: str, work: Path, minutes: float, extra: list[str],
          reuse: bool) -> tuple[Path, float]:  # fmt: skip
    """``demgen fit`` of ``config`` for ``minutes`` (``reuse``: an existing best.ckpt)."""
    found = sorted((work / "runs" / name).glob("version_*/checkpoints/best.ckpt"))
    if reuse and found:
        return found[-1], float("nan")
    t0 = time.time()
    run = fit(["--config", str(ROOT / config), "--run_root", str(work / "runs"), "--run_name",
               name, "--trainer.max_time", _hms(minutes), "--trainer.enable_progress_bar",
               "false", "--data.init_args.cache_dir", str(work / "cache"), *extra],
              log=None)  # fmt: skip
    return Path(run) / "checkpoints" / "best.ckpt", round(time.time() - t0, 1)


def calibrated_fraction(k: float, n: int, draws: int = 2_000_000) -> float:
    """P(|truth - mean| < k s) for a calibrated model and ``n`` samples (s: their sample
    std): ``P(|t_{n-1}| < k / sqrt(1 + 1/n))``, by a seeded Monte Carlo (+-0.001)."""
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(0)
    t = rng.standard_t(n - 1, draws)
    return float(np.mean(np.abs(t) < k / math.sqrt(1.0 + 1.0 / n)))


def _read(path: Path) -> np.ndarray:
    with open_raster(path) as ds:
        a = ds.read(1).astype(np.float64)
    a[a == NODATA] = np.nan
    return a


def calibration(mean: np.ndarray, std: np.ndarray, one: np.ndarray, true: np.ndarray) -> dict:
    """Errors of the mean and of one sample, coverage of mean +- k std, error by spread."""
    ok = np.isfinite(mean) & np.isfinite(std) & np.isfinite(true) & np.isfinite(one)
    e, s, e1 = (mean - true)[ok], std[ok], (one - true)[ok]
    q = np.quantile(s, [0.25, 0.5, 0.75])
    bins = np.digitize(s, q)
    return {
        "pixels": int(ok.sum()),
        "mae_mean_m": float(np.mean(np.abs(e))),
        "rmse_mean_m": float(np.sqrt(np.mean(e * e))),
        "mae_one_sample_m": float(np.mean(np.abs(e1))),
        "mean_std_m": float(np.mean(s)),
        "within_1_std": float(np.mean(np.abs(e) <= s)),
        "within_2_std": float(np.mean(np.abs(e) <= 2 * s)),
        "mae_by_std_quartile_m": [float(np.mean(np.abs(e[bins == b]))) for b in range(4)],
        "std_quartile_edges_m": [float(v) for v in q],
    }


def heldout_scenes(work: Path, size: int) -> list[Path]:
    return [generate_scene(work / "heldout" / f"hills_{s}_{size}px",
                           SceneConfig(size=size, seed=s, relief="hills", pixel_size=10.0))
            for s in HELD_OUT_SEEDS]  # fmt: skip


def part_image2dem(work: Path, minutes: float, samples: int, steps: int, size: int,
                   reuse: bool) -> dict:  # fmt: skip
    world = ["--data.init_args.n_scenes", "8", "--data.init_args.size", "256",
             "--data.init_args.chip_size", "64"]  # fmt: skip
    diff, diff_s = train("configs/diffusion/image2dem_small.yaml", "image2dem_small", work,
                         minutes, world, reuse)  # fmt: skip
    reg, reg_s = train("configs/demo.yaml", "regressor", work, minutes,
                       [*world, "--data.init_args.fractions", "[0.8, 0.2, 0.0]"],
                       reuse)  # fmt: skip
    dtask, rtask = load_task(diff), load_task(reg)
    out: dict = {"training": {"diffusion": {"checkpoint": str(diff), "fit_s": diff_s},
                              "regressor": {"checkpoint": str(reg), "fit_s": reg_s}},
                 "samples": samples, "steps": steps, "scenes": {}}  # fmt: skip
    out["calibrated_expectation"] = {
        "gaussian": {"within_1_std": 0.6827, "within_2_std": 0.9545},
        f"n{samples}": {"within_1_std": calibrated_fraction(1, samples),
                        "within_2_std": calibrated_fraction(2, samples)},
    }  # fmt: skip
    for scene in heldout_scenes(work, size):
        t0 = time.time()
        mean_p = sample_scene(dtask, scene / "image.tif", work / f"diff_{scene.name}.tif",
                              samples=samples, steps=steps, seed=0, progress=False)  # fmt: skip
        sample_s = time.time() - t0
        one_p = sample_scene(dtask, scene / "image.tif", work / f"diff1_{scene.name}.tif",
                             samples=1, steps=steps, seed=0, progress=False)  # fmt: skip
        reg_p = predict_scene(rtask, scene / "image.tif", work / f"reg_{scene.name}.tif",
                              progress=False)  # fmt: skip
        cal = calibration(_read(mean_p), _read(std_file(mean_p)), _read(one_p),
                          _read(scene / "dtm.tif"))  # fmt: skip
        cal["regressor_mae_m"] = evaluate_dem(reg_p, scene / "dtm.tif")["mae_m"]
        cal["diffusion_mean_mae_m_evaluate"] = evaluate_dem(mean_p, scene / "dtm.tif")["mae_m"]
        cal["sampling_s"] = round(sample_s, 1)
        out["scenes"][scene.name] = cal
    return out


def _image_rows(r: dict) -> dict:
    return {m: {k: v.get(k) for k in IMAGE_KEYS} for m, v in r["methods"].items()}


def part_dem2image(work: Path, minutes: float, reuse: bool) -> dict:
    world = ["--data.init_args.n_scenes", "8", "--data.init_args.size", "512"]
    ckpt, fit_s = train("configs/diffusion/dem2image_small.yaml", "dem2image_small", work,
                        minutes, world, reuse)  # fmt: skip
    task = load_task(ckpt)
    bench = ROOT / "runs" / "bench_dem2image"
    held = bench / "heldout" / "store"
    if not (held / "manifest.json").exists():  # as benchmarks/dem2image_heldout.py makes it
        scenes = [generate_scene(bench / "heldout" / f"hills_{s}",
                                 SceneConfig(size=512, seed=s, relief="hills", pixel_size=10.0))
                  for s in HELD_OUT_SEEDS]  # fmt: skip
        cfg = PrepareConfig(chip_size=128, fractions=(1.0, 0.0, 0.0), block=1)
        prepare_rasters([s / "image.tif" for s in scenes], [s / "dtm.tif" for s in scenes], held,
                        cfg)  # fmt: skip
    import torch

    torch.manual_seed(0)
    train_store = sorted((work / "cache").glob("synth_*"))[-1]
    r = score_checkpoint(task, held, split="all", baseline_store=train_store, progress=False)
    steering = attribute_steering(task, bench / "heldout" / f"hills_{HELD_OUT_SEEDS[0]}", work)
    earlier = ROOT / "benchmarks" / "dem2image_heldout.json"
    return {"checkpoint": str(ckpt), "fit_s": fit_s, "held_store": str(held),
            "diffusion": _image_rows(r), "chips": r["chips"], "attribute_steering": steering,
            "dem2image_heldout": json.loads(earlier.read_text())["chips"]
            if earlier.is_file() else None}  # fmt: skip


def attribute_steering(task, scene: Path, work: Path, px: int = 256) -> dict:
    """The attributes measured in images drawn for one held-out DEM (its first ``px`` x
    ``px``) when asked for snow, for vegetation and for nothing, beside the true image's."""
    import torch
    from rasterio.windows import Window

    from demgen.io.raster import write_raster
    from demgen.tasks.attributes import image_attributes

    names = list(task.diffusion_config.attributes)
    if not names:
        return {"skipped": "the checkpoint has no attributes"}
    crops = {}
    for name in ("dtm", "image"):
        with open_raster(scene / f"{name}.tif") as ds:
            w = Window(0, 0, px, px)
            crops[name] = write_raster(
                work / f"steer_{name}.tif", ds.read(window=w), crs=ds.crs,
                transform=ds.window_transform(w), descriptions=list(ds.descriptions),
                nodata=ds.nodata,
            )  # fmt: skip

    def measured(path: Path) -> dict:
        with open_raster(path) as ds:
            a = torch.from_numpy(ds.read().astype("float32"))[None]
        refl = a * float(task.hparams.reflectance_scale)
        v = image_attributes(refl, task.bands, (a > 0).all(dim=1, keepdim=True), names)[0]
        return {n: round(float(x), 4) for n, x in zip(names, v, strict=True)}

    asks = {"none": None, "snow": {n: float(n == "snow") for n in names},
            "vegetation": {n: float(n == "vegetation") for n in names}}  # fmt: skip
    out = {"true_image": measured(crops["image"]), "guidance": 2.0}
    for label, ask in asks.items():
        p = sample_scene(task, {"dem": crops["dtm"]}, work / f"steer_{label}.tif", seed=0,
                         attributes=ask, guidance=2.0, progress=False)  # fmt: skip
        out[f"asked_{label}"] = measured(p)
    return out


def part_temporal(work: Path, minutes: float, reuse: bool) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import temporal_heldout as th

    ckpt, fit_s = train("configs/diffusion/temporal_small.yaml", "temporal_small", work,
                        minutes, ["--data.init_args.size", "256"], reuse)  # fmt: skip
    held = ROOT / "runs" / "bench_temporal" / "heldout" / "store"
    segs = sorted((ROOT / "runs" / "bench_temporal" / "synthetic" / "runs" / "segment").glob(
        "version_*/checkpoints/best.ckpt"))  # fmt: skip
    if not (held / "manifest.json").exists() or not segs:
        return {"skipped": "run benchmarks/temporal_heldout.py first (its held-out store and "
                "segmenter are the comparison's)"}  # fmt: skip
    import torch

    torch.manual_seed(0)
    task = load_task(ckpt)
    train_store = Path(th.store_of(ckpt))
    r = score_checkpoint(task, held, split="all", segmenter=load_task(segs[-1]),
                         baseline_store=train_store, progress=False)  # fmt: skip
    earlier = ROOT / "benchmarks" / "temporal_heldout.json"
    return {"checkpoint": str(ckpt), "fit_s": fit_s, "diffusion": th._table(r),
            "temporal_heldout": json.loads(earlier.read_text())["synthetic"]
            if earlier.is_file() else None}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"subset of {PARTS}")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per model")
    ap.add_argument("--samples", type=int, default=8, help="samples per held-out scene")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps")
    ap.add_argument("--size", type=int, default=256, help="held-out image -> DEM scene px")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_diffusion")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "diffusion_heldout.json")
    ap.add_argument("--reuse", action="store_true", help="reuse the runs' best checkpoints")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        raise SystemExit(f"--parts: unknown {sorted(set(parts) - set(PARTS))}")
    args.work.mkdir(parents=True, exist_ok=True)
    res = json.loads(args.out.read_text()) if args.out.is_file() else {}
    res["what"] = "conditional diffusion on held-out synthetic data (issue 14)"
    res["machine"] = {"cpu": platform.processor() or platform.machine(),
                      "precision": resolve_precision("auto")}  # fmt: skip
    res["minutes_per_model"] = args.minutes
    for part in parts:
        w = args.work / part
        if part == "image2dem":
            res[part] = part_image2dem(w, args.minutes, args.samples, args.steps, args.size,
                                       args.reuse)  # fmt: skip
        elif part == "dem2image":
            res[part] = part_dem2image(w, args.minutes, args.reuse)
        else:
            res[part] = part_temporal(w, args.minutes, args.reuse)
        write_json(args.out, res)
        print(json.dumps(res[part], indent=1, default=str)[:4000], flush=True)
    return res


if __name__ == "__main__":
    main()
