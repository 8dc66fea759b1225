"""`demgen evaluate`: DEM accuracy in metres against a reference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from demgen.errors import DemgenError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a predicted DEM against a reference DEM",
        description=(
            "Compare PREDICTION with REFERENCE on the reference's grid (the prediction is "
            "reprojected bilinearly when the grids differ), over pixels valid in both and in "
            "--mask. Reports bias, MAE, RMSE, NMAD, LE90 (metres), R2, SSIM and PSNR on the "
            "reference's height range, slope RMSE and aspect MAE (degrees; aspect where "
            "slope > 5 deg) and hillshade SSIM; with --landcover also per class. Writes "
            "metrics.json, report.md and figure.png into --out."
        ),
    )
    p.add_argument("prediction", type=Path, help="predicted DEM (metres)")
    p.add_argument("reference", type=Path, help="reference DEM (metres)")
    p.add_argument("--mask", type=Path, default=None, help="raster: nonzero = pixel is used")
    p.add_argument("--landcover", type=Path, default=None, help="class raster for a breakdown")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="folder for the report (default: PREDICTION's name + _evaluation)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in (args.prediction, args.reference, args.mask, args.landcover):
        if path is not None and not path.exists():
            raise DemgenError(f"{path}: no such file")
    from demgen.evaluate import evaluate_to_folder

    out = args.out or args.prediction.with_name(args.prediction.stem + "_evaluation")
    m = evaluate_to_folder(
        args.prediction, args.reference, out, mask=args.mask, landcover=args.landcover
    )
    if args.json:
        print(json.dumps(m))
    else:
        print(
            f"MAE {m['mae_m']:.2f} m | RMSE {m['rmse_m']:.2f} m | bias {m['bias_m']:+.2f} m | "
            f"NMAD {m['nmad_m']:.2f} m | LE90 {m['le90_m']:.2f} m | "
            f"slope RMSE {m['slope_rmse_deg']:.2f} deg over {m['n_pixels']:,} pixels"
        )
        print(f"report: {out}")
    return 0
