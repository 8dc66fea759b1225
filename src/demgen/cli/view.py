"""`demgen view`: an interactive 3D terrain viewer as one offline HTML file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from demgen.cli.common import positive_int


def band_list(text: str) -> list[int]:
    """argparse type: comma-separated 1-based band numbers, e.g. ``3,2,1``."""
    try:
        bands = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected band numbers like 3,2,1, got {text!r}"
        ) from None
    if not bands or any(b < 1 for b in bands):
        raise argparse.ArgumentTypeError(f"band numbers start at 1, got {text!r}")
    return bands


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="write an interactive 3D view of a DEM (one offline HTML file)",
        description=(
            "Write one self-contained HTML page (three.js embedded, works offline) showing "
            "the DEM in 3D: orbit and zoom, vertical exaggeration, the image draped on it "
            "(reprojected onto the DEM grid, 2-98 % stretch), hillshade or colour relief, "
            "and a legend of the height range in metres. Large DEMs are block-averaged to "
            "at most --max-vertices per side; the page states the decimation."
        ),
    )
    p.add_argument("dem", type=Path, help="DEM GeoTIFF (heights in metres)")
    p.add_argument(
        "--image",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="IMAGE",
        help="image to drape: one multi-band file, or three one-band files in R G B order",
    )
    p.add_argument(
        "--bands",
        type=band_list,
        default=None,
        help="bands of a multi-band --image as R,G,B (1-based, e.g. 3,2,1); "
        "default B4,B3,B2 by description, else the first three",
    )
    p.add_argument(
        "--compare", type=Path, default=None, help="second DEM shown beside it, cameras linked"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="HTML file to write")
    p.add_argument(
        "--max-vertices", type=positive_int, default=512, help="mesh vertices per side (512)"
    )
    p.add_argument(
        "--texture-size", type=positive_int, default=2048, help="texture pixels per side (2048)"
    )
    p.add_argument("--title", default=None, help="page title (default: the file names)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demgen.viz.viewer import render_view

    t0 = time.time()
    info = render_view(
        args.dem,
        args.output,
        images=args.image,
        bands=args.bands,
        compare=args.compare,
        max_vertices=args.max_vertices,
        max_texture=args.texture_size,
        title=args.title,
        overwrite=args.overwrite,
    )
    ny, nx = info.mesh_shape
    size_mb = info.path.stat().st_size / 1e6
    print(
        f"wrote {info.path} ({size_mb:.1f} MB; mesh {nx} x {ny} vertices, decimated "
        f"{info.decimation:.1f}x; heights {info.height_min:.1f} to {info.height_max:.1f} m; "
        f"layers {', '.join(info.layers)}) in {time.time() - t0:.1f} s"
    )
    return 0
