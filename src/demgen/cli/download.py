"""`demgen download`: imagery and a DEM from a STAC API onto one grid, ready for prepare."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from demgen.cli.common import positive_int


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {v}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    from demgen.sources.stac import EARTH_SEARCH

    p = sub.add_parser(
        "download",
        help="Sentinel-2 / Landsat imagery and the Copernicus DEM from a STAC API, on one grid",
        description=(
            "Search a STAC API (Earth Search v1 by default) over a lon/lat box and a date "
            "range, read only the needed windows of the COG assets onto one grid and write "
            "OUT/image.tif (uint16 reflectance x 10000, cloud-free median over the dates), "
            "OUT/cloud_mask.tif, OUT/dem.tif (metres, EGM2008) and OUT/provenance.json: what "
            "`demgen prepare --image OUT/image.tif --dem OUT/dem.tif --cloud-mask "
            "OUT/cloud_mask.tif` reads. Clouds and shadows come from Sentinel-2's SCL (classes "
            "0, 1, 3, 8, 9, 10) or Landsat's QA_PIXEL (bits 0-4). A second run of the same "
            "command resumes: complete files are skipped. Failed requests are retried with "
            "exponential backoff; a server that stays down is one error line, exit code 2."
        ),
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument(
        "--bbox",
        required=True,
        help="W,S,E,N in degrees (WGS84 lon/lat); write --bbox=-4.1,40.7,-3.9,40.9 "
        "when W is negative",
    )
    p.add_argument("--dates", required=True, help="FROM/TO, inclusive, e.g. 2023-06-01/2023-08-31")
    p.add_argument(
        "--collections",
        default="s2,copdem",
        help="comma list of s2 (Sentinel-2 L2A), landsat (Landsat 8/9 C2 L2), copdem "
        "(Copernicus DEM GLO-30); default s2,copdem",
    )
    p.add_argument(
        "--crs", default=None, help="output CRS, e.g. 32630 or EPSG:32630 (default: UTM zone "
        "of the box centre)"
    )  # fmt: skip
    p.add_argument(
        "--resolution", type=float, default=None,
        help="pixel size in the CRS's units (default 10 for s2, 30 for landsat or copdem alone)",
    )  # fmt: skip
    p.add_argument("--stac-url", default=EARTH_SEARCH, help=f"STAC API (default {EARTH_SEARCH})")
    p.add_argument(
        "--sign", choices=("none", "planetary-computer"), default="none",
        help="asset signing: planetary-computer appends SAS tokens from its token endpoint "
        "(for --stac-url https://planetarycomputer.microsoft.com/api/stac/v1)",
    )  # fmt: skip
    p.add_argument("--token-url", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--max-cloud", type=_nonneg_float, default=20.0,
        help="keep scenes with eo:cloud_cover <= this percent (default 20)",
    )  # fmt: skip
    p.add_argument(
        "--composite", choices=("median", "none"), default="median",
        help="median: per-pixel median over clear dates (default); none: OUT/<date>/ per date",
    )  # fmt: skip
    p.add_argument("--mask-snow", action="store_true", help="also mask snow (SCL 11, QA bit 5)")
    p.add_argument("--max-items", type=positive_int, default=100, help="per collection (100)")
    p.add_argument("--retries", type=int, default=4, help="retries per request (default 4)")
    p.add_argument(
        "--backoff", type=_nonneg_float, default=1.0,
        help="first retry delay in seconds, doubling each retry (default 1)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (30)")
    p.add_argument("--overwrite", action="store_true", help="replace a different earlier download")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demgen.sources.download import DownloadOptions, DownloadRequest, download
    from demgen.sources.stac import RetryPolicy, parse_dates

    req = DownloadRequest(
        bbox=args.bbox,
        dates=parse_dates(args.dates),
        collections=args.collections.split(","),
        crs=args.crs,
        resolution=args.resolution,
        stac_url=args.stac_url,
        max_cloud=args.max_cloud,
        composite=args.composite,
        mask_snow=args.mask_snow,
        max_items=args.max_items,
        sign=args.sign,
    )
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    opts = DownloadOptions(
        retry=RetryPolicy(retries=max(0, args.retries), backoff=args.backoff),
        timeout=args.timeout,
        progress=not args.quiet,
        overwrite=args.overwrite,
        token_url=args.token_url,
        log=log,
    )
    t0 = time.time()
    prov = download(req, args.out, opts)
    outputs = ", ".join(sorted(prov["outputs"]))
    g = prov["grid"]
    print(
        f"wrote {args.out} ({outputs}) on {g['crs']} {g['width']} x {g['height']} px "
        f"in {time.time() - t0:.1f} s"
    )
    return 0
