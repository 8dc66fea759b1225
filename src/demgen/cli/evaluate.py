"""`demgen evaluate`: DEM accuracy in metres against a reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demgen.cli.common import positive_int
from demgen.errors import DemgenError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a predicted DEM against a reference DEM",
        description=(
            "Compare PREDICTION with REFERENCE on the reference's grid (the prediction is "
            "reprojected when the grids differ: averaged when its pixels are over 1.5x "
            "finer, bilinear otherwise), over pixels valid in both and in --mask. Reports "
            "bias, MAE, RMSE, NMAD, LE90 (metres), R2, SSIM and PSNR on the reference's "
            "height range, slope RMSE and mean slopes, aspect MAE (degrees; aspect where "
            "slope > 5 deg) and hillshade SSIM, all with the pixel size in metres (also on "
            "geographic grids); with --landcover also per class; with --coregister after "
            "removing the horizontal and vertical shift (Nuth & Kaab 2011). Warns when the "
            "two rasters declare different vertical datums. Reads both rasters in strips "
            "(bounded memory). Writes metrics.json (strict JSON), report.md and figure.png "
            "into --out."
        ),
    )
    p.add_argument("prediction", type=Path, help="predicted DEM (metres)")
    p.add_argument("reference", type=Path, help="reference DEM (metres)")
    p.add_argument("--mask", type=Path, default=None, help="raster: nonzero = pixel is used")
    p.add_argument("--landcover", type=Path, default=None, help="class raster for a breakdown")
    p.add_argument(
        "--coregister",
        action="store_true",
        help="find and remove the prediction's horizontal and vertical shift first "
        "(Nuth & Kaab 2011, over --mask's stable pixels); the shift is reported",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="folder for the report (default: PREDICTION's name + _evaluation)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument(
        "--window-rows",
        type=positive_int,
        default=None,
        help="rows read at a time (default 256): memory per strip, not the result",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in (args.prediction, args.reference, args.mask, args.landcover):
        if path is not None and not path.exists():
            raise DemgenError(f"{path}: no such file")
    from demgen.evaluate import check_out_dir, evaluate_to_folder
    from demgen.evaluation_windows import WINDOW_ROWS
    from demgen.io.jsonio import dumps

    out = args.out or args.prediction.with_name(args.prediction.stem + "_evaluation")
    check_out_dir(out, args.overwrite)
    m = evaluate_to_folder(
        args.prediction, args.reference, out, mask=args.mask, landcover=args.landcover,
        coregister=args.coregister, window_rows=args.window_rows or WINDOW_ROWS,
        overwrite=args.overwrite,
    )  # fmt: skip
    for warning in m["warnings"]:
        print(f"demgen evaluate: warning: {warning}", file=sys.stderr)
    if args.json:
        print(dumps(m, indent=None))
    else:
        c = m.get("coregistration")
        if c:
            print(
                f"co-registered: dx {c['dx_m']:+.2f} m, dy {c['dy_m']:+.2f} m, "
                f"dz {c['dz_m']:+.2f} m ({c['iterations']} iterations)"
            )
        print(
            f"MAE {m['mae_m']:.2f} m | RMSE {m['rmse_m']:.2f} m | bias {m['bias_m']:+.2f} m | "
            f"NMAD {m['nmad_m']:.2f} m | LE90 {m['le90_m']:.2f} m | "
            f"slope RMSE {m['slope_rmse_deg']:.2f} deg over {m['n_pixels']:,} pixels"
        )
        print(f"report: {out}")
    return 0
