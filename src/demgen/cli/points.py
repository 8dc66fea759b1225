"""`demgen points`: a DEM as a LAS/LAZ point cloud, optionally coloured by an image."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "points",
        help="write a DEM as a LAS/LAZ point cloud (one point per valid cell)",
        description=(
            "Write DEM as a point cloud: one point at the centre of every valid cell, in the "
            "DEM's CRS (LAS 1.4 OGC WKT record), heights to the millimetre. With --image the "
            "points are coloured by the image reprojected onto the DEM grid (bands B4,B3,B2 "
            "by description, else the first three; 8-bit x 257, otherwise a 2-98 %% stretch "
            "to 16 bits). A DEM tagged heights=relative is flagged relative in the header. "
            "LAZ when the output ends in .laz. `demgen lidar` at the DEM's resolution grids "
            "it back to the DEM."
        ),
    )
    p.add_argument("dem", type=Path, help="DEM GeoTIFF (any raster rasterio reads)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .las or .laz file")
    p.add_argument("--image", type=Path, help="image to colour the points with")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demgen.pointcloud.export import dem_to_points

    s = dem_to_points(
        args.dem, args.out, args.image, overwrite=args.overwrite, progress=not args.quiet
    )
    colour = ", coloured" if s["coloured"] else ""
    print(
        f"wrote {args.out}: {s['points']:,} points in {s['crs']}, {s['heights']} heights "
        f"(vertical datum {s['vertical_crs']}){colour}"
    )
    return 0
