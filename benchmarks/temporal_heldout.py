"""Spatio-temporal synthesis (day-0 image + mask at t -> image at t) on held-out places.

1. Trains the recipes of ``configs/temporal/`` for the same wall-clock budget each: the
   building segmenter (on true images only), the attention U-Net and the pix2pix
   generator, on a synthetic time-series world (6 plains places of 256 px, seeds 1-6, 8
   dates 3 months apart, settlements growing along towns and roads).
2. Synthesizes held-out places from other seeds, builds their time store (every
   location in ``all``) and scores each generator with ``demgen test``'s temporal scorer
   beside persistence and persistence with the new buildings painted in the training
   roof colour: image metrics over the whole image and over the changed pixels, and the
   segmenter's building F1 on each method's image against the conditioning mask (next to
   its F1 on the true future image).
3. The Sentinel-2 series of ``../shared/realdata/romania_s2_timeseries`` (if present):
   imported with a change mask (clear-cuts) and SCL cloud masks, trained and scored the
   same way on its own spatially blocked test split.

Writes ``benchmarks/temporal_heldout.json``.

    .venv/bin/python benchmarks/temporal_heldout.py --minutes 5
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

from demgen.data.s2series import import_s2_series  # noqa: E402
from demgen.data.synth import SceneConfig  # noqa: E402
from demgen.data.synth.timeseries import TimeSeriesConfig, generate_time_series_world  # noqa: E402
from demgen.data.timestore import build_time_store  # noqa: E402
from demgen.io.jsonio import write_json  # noqa: E402
from demgen.precision import resolve_precision  # noqa: E402
from demgen.scoring import score_checkpoint  # noqa: E402
from demgen.tasks.registry import load_task  # noqa: E402
from demgen.training import fit  # noqa: E402

GENERATORS = {
    "attention_unet": "configs/temporal/temporal_attention_unet.yaml",
    "pix2pix": "configs/temporal/temporal_pix2pix.yaml",
}
SEGMENTER = "configs/temporal/segment_buildings.yaml"
HELD_OUT_SEEDS = (1000, 1001)
ROMANIA = ROOT.parent / "shared" / "realdata" / "romania_s2_timeseries"
WHOLE = ("psnr_db", "ssim", "sam_deg", "mae", "fd_demgen_rand")
CHANGED = ("psnr_db", "ssim", "sam_deg", "mae")


def _hms(minutes: float) -> str:
    s = int(round(minutes * 60))
    return f"00:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def on_store(config: str, store: Path, work: Path) -> str:
    """A copy of the recipe ``config`` whose data is the time store ``store``."""
    import yaml

    cfg = yaml.safe_load((ROOT / config).read_text())
    old = cfg["data"]["init_args"]
    cfg["data"] = {"class_path": "demgen.data.time_datamodule.TimeDataModule",
                   "init_args": {"store": str(store), "batch_size": old.get("batch_size", 8),
                                 "mode": old.get("mode", "pairs"), "num_workers": 0}}  # fmt: skip
    out = work / "configs" / Path(config).name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(out)


REUSE = False  # --reuse: a run folder's existing best.ckpt stands for its training


def train(config: str, name: str, work: Path, minutes: float, extra: list[str]) -> Path:
    """``demgen fit`` of one recipe for ``minutes``; returns its best checkpoint (with
    ``--reuse``, the newest existing one of that run name)."""
    done = sorted((work / "runs" / name).glob("version_*/checkpoints/best.ckpt"))
    if REUSE and done:
        print(f"[bench] {name}: reusing {done[-1]}", flush=True)
        return done[-1]
    args = ["--config", str(ROOT / config), "--run_root", str(work / "runs"), "--run_name", name,
            "--trainer.max_time", _hms(minutes), "--trainer.enable_progress_bar", "false",
            *extra]  # fmt: skip
    t0 = time.time()
    run = fit(args)
    print(f"[bench] {name}: trained {time.time() - t0:.0f} s in {run}", flush=True)
    return Path(run) / "checkpoints" / "best.ckpt"


def _table(r: dict) -> dict:
    """The numbers of a temporal score: whole, changed and F1 per method."""
    out = {}
    for m, v in r["methods"].items():
        out[m] = {"whole": {k: v["whole"].get(k) for k in WHOLE},
                  "changed": {k: v["changed"].get(k) for k in CHANGED},
                  "f1": v.get("f1"), "iou": v.get("iou")}  # fmt: skip
    out["true_image"] = {"f1": r["true_image"].get("f1"), "iou": r["true_image"].get("iou")}
    out["pairs"], out["changed_pixels"] = r["pairs"], r["changed_pixels"]
    return out


def run_world(
    work: Path,
    minutes: float,
    data: list[str],
    store: Path | None,
    held_store: Path | None,
    split: str,
    small: dict | None = None,
) -> dict:  # fmt: skip
    """Train the segmenter and both generators (on the time store ``store``, else on the
    recipes' own synthetic world); score on ``split`` of ``held_store`` (default: the
    training store itself)."""

    small = small or {}

    def recipe(config: str) -> str:
        return on_store(config, store, work) if store is not None else config

    ckpt = {"segmenter": train(recipe(SEGMENTER), "segment", work, minutes, data)}
    for name, config in GENERATORS.items():
        extra = [*data, *small.get(name, [])]
        ckpt[name] = train(recipe(config), f"temporal_{name}", work, minutes, extra)
    seg = load_task(ckpt["segmenter"])
    result = {}
    for name in GENERATORS:
        task = load_task(ckpt[name])
        train_store = Path(store_of(ckpt[name]))
        r = score_checkpoint(task, held_store or train_store, split=split, segmenter=seg,
                             baseline_store=train_store, progress=False)  # fmt: skip
        result[name] = _table(r)
    return result


def store_of(ckpt: Path) -> str:
    """The store a checkpoint trained on (its data module's saved state)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for value in state.values():
        if isinstance(value, dict) and isinstance(value.get("store"), str):
            return value["store"]
    raise SystemExit(f"{ckpt}: no store recorded")


def _f(v: object, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def render_table(r: dict) -> str:
    """The README table: per dataset and generator, the model and both persistence
    baselines over the whole image and the changed pixels, and the segmenter's F1."""
    titles = {"model": "model", "persistence": "persistence (day 0)",
              "persistence_painted": "persistence + new buildings painted"}  # fmt: skip
    lines = ["| data | generator | method | PSNR whole (dB) | SSIM whole | SAM whole (deg) | "
             "fd_demgen_rand | PSNR changed (dB) | MAE changed | F1 |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for data in ("synthetic", "romania"):
        for gen, v in (r.get(data) or {}).items():
            if not isinstance(v, dict) or "model" not in v:
                continue
            for m, title in titles.items():
                w, c = v[m]["whole"], v[m]["changed"]
                lines.append(
                    f"| {data} | {gen} | {title} | {_f(w['psnr_db'], '.2f')} | "
                    f"{_f(w['ssim'], '.3f')} | {_f(w['sam_deg'], '.2f')} | "
                    f"{_f(w['fd_demgen_rand'], '.3f')} | {_f(c['psnr_db'], '.2f')} | "
                    f"{_f(c['mae'], '.4f')} | {_f(v[m]['f1'], '.3f')} |"
                )  # fmt: skip
            lines.append(f"| {data} | {gen} | true image at t (segmenter ceiling) | | | | | | | "
                         f"{_f(v['true_image']['f1'], '.3f')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per recipe")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_temporal")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "temporal_heldout.json")
    ap.add_argument("--skip-romania", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse the runs' existing checkpoints")
    ap.add_argument("--table", action="store_true", help="only print the table of --out")
    args = ap.parse_args()
    if args.table:
        print(render_table(json.loads(args.out.read_text())), end="")
        return
    global REUSE
    REUSE = args.reuse
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    cache = ["--data.init_args.cache_dir", str(work / "cache")]

    held = work / "heldout"
    if not (held / "store" / "manifest.json").exists():
        # the recipes' time axis and relief (configs/temporal: plains, growing settlements)
        ts = TimeSeriesConfig(times=8, months_between=3, cloud_cover=0.2, urban_rate=0.3,
                              road_rate=0.05)  # fmt: skip
        places = [generate_time_series_world(held / f"seed_{s}", 1,
                                             SceneConfig(size=256, seed=s, relief="plains"),
                                             ts)[0]
                  for s in HELD_OUT_SEEDS]  # fmt: skip
        build_time_store(places, held / "store", chip_size=64, fractions=(1.0, 0.0, 0.0),
                         block=1, buffer=0.0)  # fmt: skip
    result: dict = {
        "what": "temporal synthesis on held-out synthetic places (seeds never trained on)",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "precision": resolve_precision("auto"),
        },  # fmt: skip
        "minutes_per_recipe": args.minutes,
        "held_out_seeds": list(HELD_OUT_SEEDS),
        "synthetic": run_world(
            work / "synthetic", args.minutes, cache, None, held / "store", "all"
        ),  # fmt: skip
    }
    write_json(args.out, result)  # the synthetic part is kept even if the real one fails
    if ROMANIA.is_dir() and not args.skip_romania:
        series = work / "romania" / "series"
        if not (series / "times.json").exists():
            import_s2_series(ROMANIA, series)
        store = work / "romania" / "store"
        if not (store / "manifest.json").exists():
            build_time_store([series], store, chip_size=16, block=2, max_invalid=0.1)
        # 16-px chips: a shallower pix2pix G and a 1-layer PatchGAN fit them
        tiny = {
            "pix2pix": ["--model.init_args.generator_kwargs", "{depth: 4, base: 64}",
                        "--model.init_args.discriminator_kwargs", "{n_layers: 1}"],
            "attention_unet": ["--model.init_args.discriminator_kwargs", "{n_layers: 1}"],
        }  # fmt: skip
        result["romania"] = run_world(work / "romania", args.minutes, [], store, None, "test", tiny)
        result["romania"]["caveat"] = (
            "one 100 x 100 px place (1 km2), 16-px chips: a handful of test locations; the "
            "mask is the NDVI change mask (clear-cuts), not buildings"
        )
    write_json(args.out, result)
    args.out.with_suffix(".md").write_text(render_table(result))
    print(json.dumps(result, indent=1, default=str))
    print(render_table(result))


if __name__ == "__main__":
    main()
