"""`demgen evaluate`: DEM accuracy in metres, or image quality, against a reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demgen.cli.common import positive_int
from demgen.errors import DemgenError


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a predicted DEM (or image) against a reference DEM (or image)",
        description=(
            "DEMs: compare PREDICTION with REFERENCE on the reference's grid (the prediction is "
            "reprojected when the grids differ: averaged when its pixels are over 1.5x "
            "finer, bilinear otherwise), over pixels valid in both and in --mask. Reports "
            "bias, MAE, RMSE, NMAD, LE90 (metres), R2, SSIM and PSNR on the reference's "
            "height range, slope RMSE and mean slopes, aspect MAE (degrees; aspect where "
            "slope > 5 deg) and hillshade SSIM, all with the pixel size in metres (also on "
            "geographic grids); with --landcover also per class; with --coregister after "
            "removing the horizontal and vertical shift (Nuth & Kaab 2011). Warns when the "
            "two rasters declare different vertical datums. Reads both rasters in strips "
            "(bounded memory). Writes metrics.json (strict JSON), report.md and figure.png "
            "into --out. "
            "Images (both rasters have several bands or say reflectance; a single-band "
            "raster in metres, named dtm/dsm/dem, or any other single-band one is a DEM; "
            "--kind forces it): bands are matched by description (else by position), the "
            "prediction is warped onto the reference's grid by the same rule, and over "
            "pixels valid in both (nodata, masks, 0 in every band of an undeclared uint16 "
            "file) it reports PSNR, SSIM, MS-SSIM, SAM, ERGAS, RMSE and MAE, overall and "
            "per band, at a data range L from the files (reflectance x 10000: 10000; float "
            "reflectance 0..1: 1; uint8: 255; or --data-range), and fd_demgen_rand (a "
            "Frechet distance on demgen's fixed random-feature net, not Inception FID) over "
            "complete valid --fd-chip chips; with --feature-net also FID, KID and LPIPS. "
            "Images are read in strips too (--window-rows), with the same numbers."
        ),
    )
    p.add_argument("prediction", type=Path, help="predicted DEM (metres) or image")
    p.add_argument("reference", type=Path, help="reference DEM (metres) or image")
    p.add_argument(
        "--kind",
        choices=("auto", "dem", "image"),
        default="auto",
        help="what the rasters hold (default auto: decided from their bands, units, tags)",
    )
    p.add_argument("--mask", type=Path, default=None, help="raster: nonzero = pixel is used")
    p.add_argument("--landcover", type=Path, default=None, help="class raster for a breakdown")
    p.add_argument(
        "--coregister",
        action="store_true",
        help="find and remove the prediction's horizontal and vertical shift first "
        "(Nuth & Kaab 2011, over --mask's stable pixels); the shift is reported",
    )
    p.add_argument(
        "--data-range",
        type=positive_float,
        default=None,
        help="images: the data range L for PSNR and SSIM (default: from the files)",
    )
    p.add_argument(
        "--fd-chip",
        type=positive_int,
        default=None,
        help="images: side in px of the chips of fd_demgen_rand, FID, KID, LPIPS (default 64)",
    )
    p.add_argument(
        "--feature-net",
        type=Path,
        default=None,
        help="images: a local TorchScript feature net (.pt) for FID, KID and LPIPS",
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
        help="rows read at a time, DEMs and images (default 256): memory per strip, not the result",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = (args.prediction, args.reference, args.mask, args.landcover, args.feature_net)
    for path in paths:
        if path is not None and not path.exists():
            raise DemgenError(f"{path}: no such file")
    from demgen.evaluate import check_out_dir, evaluate_to_folder
    from demgen.evaluation_image import summary
    from demgen.evaluation_windows import WINDOW_ROWS
    from demgen.io.jsonio import dumps

    options = {"data_range": args.data_range, "feature_net": args.feature_net,
               "fd_chip": args.fd_chip}  # fmt: skip
    image_options = {k: v for k, v in options.items() if v is not None}

    out = args.out or args.prediction.with_name(args.prediction.stem + "_evaluation")
    check_out_dir(out, args.overwrite)
    m = evaluate_to_folder(
        args.prediction, args.reference, out, mask=args.mask, landcover=args.landcover,
        coregister=args.coregister, window_rows=args.window_rows or WINDOW_ROWS,
        overwrite=args.overwrite, kind=args.kind, **image_options,
    )  # fmt: skip
    for warning in m["warnings"]:
        print(f"demgen evaluate: warning: {warning}", file=sys.stderr)
    if args.json:
        print(dumps(m, indent=None))
    elif m.get("kind") == "image":
        print(summary(m))
        print(f"report: {out}")
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
