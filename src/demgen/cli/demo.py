"""`demgen demo`: the main job end to end."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from demgen.cli.common import add_precision_argument
from demgen.errors import DemgenError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: synthesize, train, predict two held-out scenes, evaluate",
        description=(
            "Train a U-Net DEM regressor through `demgen fit --config configs/demo.yaml` (a "
            "synthetic world prepared into a chip store, training bounded by "
            "--trainer.max_time: 7 minutes; --fast: one minute on a smaller world, under 2 "
            "minutes in all), then synthesize two held-out scenes from other seeds (the "
            "training relief and another one), predict each from the best checkpoint as a "
            "georeferenced GeoTIFF in metres, and compare them with two baselines fitted on "
            "the store's training split (training-mean elevation and per-pixel linear "
            "regression on the bands). Writes model.ckpt, prediction*.tif, metrics.json, "
            "report.md (with the README's table), figure.png, learning_curves.png, "
            "test_scene*/, the fit run (fit/) and the world and chip store (data/)."
        ),
    )
    p.add_argument("--fast", action="store_true", help="small world and short training (tests)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder (default runs/demo-<time>); must not exist",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training time budget in minutes: --trainer.max_time (default 7; --fast 1)",
    )
    add_precision_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Check the arguments before importing torch and Lightning (seconds of start-up).
    out = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DemgenError(f"{out} already exists and is not empty (choose another --out)")
    if args.minutes is not None and not args.minutes > 0:
        raise DemgenError(f"--minutes must be positive, got {args.minutes}")

    from dataclasses import replace

    from demgen.demo import DemoConfig, run_demo

    cfg = DemoConfig.fast() if args.fast else DemoConfig()
    cfg = replace(cfg, precision=args.precision)
    if args.minutes is not None:
        cfg = replace(cfg, minutes=args.minutes)
    metrics = run_demo(out, cfg, progress=not args.quiet)
    for s in metrics["held_out"].values():
        m, lin, mean = s["model"], s["linear_baseline"], s["mean_baseline"]
        print(
            f"held-out {s['relief']} (seed {s['seed']}) MAE: model {m['mae_m']:.1f} m | "
            f"linear baseline {lin['mae_m']:.1f} m | mean baseline {mean['mae_m']:.1f} m"
        )
    print(f"run folder: {out}")
    return 0
