"""`demgen test`: score a checkpoint on a chip-store split beside the honest baselines
(height outputs by :mod:`demgen.scoring`, image outputs by :mod:`demgen.scoring_image`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demgen.cli.common import add_precision_argument, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test",
        help="score a checkpoint (heights or images) on a chip store split, beside baselines",
        description=(
            "Predict every chip of SPLIT of STORE with CHECKPOINT and score it in the task's "
            "units over the pixels the store marks valid (heights: bias, MAE, RMSE, NMAD, "
            "LE90, R2, SSIM, slope RMSE in metres), beside two baselines fitted on the "
            "store's training split and scored on the same pixels: the training-mean "
            "elevation and a per-pixel linear regression on the image bands. Relative "
            "(per-chip) models, and stores of relative heights (.npz imports), are scored "
            "with explicitly relative metrics (*_rel: each prediction shifted per chip by "
            "its mean error). Image tasks (DEM -> image, output in reflectance) are scored "
            "in reflectance at data range 1 (PSNR, SSIM, MS-SSIM, SAM, ERGAS, RMSE, MAE, per "
            "band, and fd_demgen_rand, a Frechet distance on demgen's fixed random "
            "features), beside the training mean image and a per-pixel linear regression on "
            "the relief the model sees (height, slope, aspect, hillshade). Prints the report "
            "(or --json); with -o DIR also writes metrics.json, report.md and figure.png "
            "there."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="model checkpoint (.ckpt)")
    p.add_argument("store", type=Path, help="chip store folder (demgen prepare)")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="which split to score (test); all: every chip, for a store of chips "
                   "no model trained on (give --baseline-store then)")  # fmt: skip
    p.add_argument(
        "--baseline-store", type=Path, metavar="STORE",
        help="fit the baselines on this store's training split (default: STORE's); give the "
        "store the model trained on when scoring chips of another one",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("-o", "--out", type=Path, help="folder for metrics.json, report.md, figure")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing DIR")
    p.add_argument("--batch-size", type=positive_int, default=8, help="chips per batch (8)")
    add_precision_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demgen.errors import InputError
    from demgen.io.jsonio import dumps, write_json
    from demgen.io.raster import write_text_atomic
    from demgen.scoring import render_report, score_checkpoint
    from demgen.tasks.registry import load_task

    out = args.out
    if out is not None and out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(f"{out} already exists and is not empty (pass --overwrite)")
    task = load_task(args.checkpoint)
    figure = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        figure = out / "figure.png"
    result = score_checkpoint(
        task, args.store, split=args.split, batch_size=args.batch_size,
        precision=args.precision, progress=not args.quiet and sys.stderr.isatty(),
        figure=figure, baseline_store=args.baseline_store,
    )  # fmt: skip
    result["checkpoint"] = str(args.checkpoint)
    report = render_report(result, args.checkpoint)
    if out is not None:
        write_json(out / "metrics.json", result)
        write_text_atomic(out / "report.md", report)
    if args.json:
        print(dumps(result))
    else:
        print(report, end="")
        if result.get("unit") == "reflectance":
            from demgen.scoring_image import summary_line

            print(f"\n{summary_line(result)}")
    return 0
