"""`demgen test`: score a checkpoint on a chip-store split beside the honest baselines
(height outputs by :mod:`demgen.scoring`, image outputs by :mod:`demgen.scoring_image`), or
on the pairs of a time store (:mod:`demgen.scoring_temporal`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demgen.cli.common import add_precision_argument, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test",
        help="score a checkpoint (heights, images, future images) on a store split, beside "
        "baselines",
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
            "the relief the model sees (height, slope, aspect, hillshade). On a time store "
            "(dated chips and their pairs: demgen.data.timestore), image + mask -> future "
            "image checkpoints are scored on the (day 0, t) pairs in reflectance, whole image "
            "and new-building pixels, beside persistence (the day-0 image) and persistence "
            "with the new buildings painted in the training mean roof colour; with "
            "--segmenter, the "
            "building F1 of each image (and of the true one: the ceiling) against the "
            "conditioning mask. Prints the report (or --json); with -o DIR also writes "
            "metrics.json, report.md and figure.png there."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="model checkpoint (.ckpt)")
    p.add_argument("store", type=Path, help="chip store (demgen prepare) or time store folder")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="which split to score (test); all: every chip, for a store of chips "
                   "no model trained on (give --baseline-store then)")  # fmt: skip
    p.add_argument(
        "--baseline-store", type=Path, metavar="STORE",
        help="fit the baselines (time stores: the mean roof colour) on this store's training "
        "split (default: STORE's); give the store the model trained on when scoring chips of "
        "another one",
    )  # fmt: skip
    p.add_argument(
        "--segmenter", type=Path, metavar="CKPT",
        help="time stores: a segmentation checkpoint (probability output, trained on true "
        "images) whose building F1 on each image measures semantic fidelity",
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
    segmenter = None
    if args.segmenter is not None:
        from demgen.scoring_temporal import segmenter_layers

        segmenter = load_task(args.segmenter)
        segmenter_layers(segmenter)  # a probability output, else a one-line error (exit 2)
    figure = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        figure = out / "figure.png"
    result = score_checkpoint(
        task, args.store, split=args.split, batch_size=args.batch_size,
        precision=args.precision, progress=not args.quiet and sys.stderr.isatty(),
        figure=figure, baseline_store=args.baseline_store, segmenter=segmenter,
    )  # fmt: skip
    result["checkpoint"] = str(args.checkpoint)
    if segmenter is not None and result.get("segmenter"):
        result["segmenter"]["path"] = str(args.segmenter)
    report = render_report(result, args.checkpoint)
    if out is not None:
        write_json(out / "metrics.json", result)
        write_text_atomic(out / "report.md", report)
    if args.json:
        print(dumps(result))
    else:
        print(report, end="")
        if result.get("store_format"):  # a time store's pairs
            from demgen.scoring_temporal import temporal_summary_line

            print(f"\n{temporal_summary_line(result)}")
        elif result.get("unit") == "reflectance":
            from demgen.scoring_image import summary_line

            print(f"\n{summary_line(result)}")
    return 0
