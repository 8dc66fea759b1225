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
        help="the main job: synthesize, train, predict a held-out scene, evaluate",
        description=(
            "Synthesize a small world (training, validation and a held-out test scene from "
            "another seed), train a U-Net DEM regressor within a time budget (about 10 "
            "minutes on 2 CPU cores; --fast: under 2), predict the whole held-out scene as a "
            "georeferenced GeoTIFF in metres, and compare it with two baselines (training-mean "
            "elevation and per-pixel linear regression on the bands). Writes prediction.tif, "
            "model.ckpt, metrics.json, report.md, figure.png and test_scene/ to the run folder."
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
        "--minutes", type=float, default=None, help="training time budget in minutes (default 7)"
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
        cfg = replace(cfg, budget_minutes=args.minutes)
    metrics = run_demo(out, cfg, progress=not args.quiet)
    m, lin, mean = metrics["model"], metrics["linear_baseline"], metrics["mean_baseline"]
    print(
        f"held-out MAE: model {m['mae_m']:.1f} m | linear baseline {lin['mae_m']:.1f} m | "
        f"mean baseline {mean['mae_m']:.1f} m"
    )
    print(f"run folder: {out}")
    return 0
