"""Peak memory and throughput of `demgen lidar` on a large synthetic point cloud.

Writes N points (default 50 million) as LAZ tiles into a temporary folder, in chunks so
the writer itself stays small, then runs `demgen lidar` on all tiles in a child process
and reads the child's peak resident memory (``ru_maxrss`` of RUSAGE_CHILDREN: the child
is the only one) and its wall time. Results go to benchmarks/lidar_memory.json.

The cloud: 8 points per 1 m cell (3DEP QL1 density) over a square of N / 8 cells, in 5
tiles (strips); gentle terrain, 30 % of points on 15 m canopy (class 5, first returns),
the rest ground (class 2), 0.01 % noise (class 7). Points arrive in random order within a
tile, the worst case for cache locality.

    python benchmarks/lidar_memory.py [--points 50000000] [--chunk 1000000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import laspy
import numpy as np
from rasterio.crs import CRS

HERE = Path(__file__).resolve().parent
PER_CELL = 8
TILES = 5


def write_tiles(folder: Path, n: int, chunk: int, seed: int = 0) -> tuple[list[Path], int]:
    """LAZ tiles of ``n`` points in all (see the module docstring); returns (paths, side m)."""
    rng = np.random.default_rng(seed)
    side = int(math.ceil(math.sqrt(n / PER_CELL)))
    strip = side / TILES
    wkt = CRS.from_epsg(32633).to_wkt()
    paths = []
    for t in range(TILES):
        header = laspy.LasHeader(point_format=6, version="1.4")
        header.scales = np.array([0.001] * 3)
        header.offsets = np.array([500_000.0, 5_000_000.0, 0.0])
        header.vlrs.append(laspy.vlrs.known.WktCoordinateSystemVlr(wkt))
        header.global_encoding.wkt = True
        path = folder / f"tile_{t}.laz"
        todo = n // TILES + (1 if t < n % TILES else 0)
        with laspy.open(path, mode="w", header=header, do_compress=True) as w:
            while todo > 0:
                k = min(chunk, todo)
                x = rng.uniform(t * strip, (t + 1) * strip, k)
                y = rng.uniform(0, side, k)
                ground = 200 + 20 * np.sin(x / 300) * np.cos(y / 250)
                canopy = rng.random(k) < 0.3
                cls = np.where(canopy, 5, 2).astype(np.uint8)
                z = ground + np.where(canopy, 15.0, 0.0) + rng.normal(0, 0.03, k)
                noise = rng.random(k) < 1e-4
                cls[noise] = 7
                z[noise] += 200
                pts = laspy.ScaleAwarePointRecord.zeros(k, header=header)
                pts.x, pts.y, pts.z = x + 500_000.0, y + 5_000_000.0, z
                pts.classification = cls
                pts.return_number = np.ones(k, np.uint8)
                pts.number_of_returns = np.ones(k, np.uint8)
                w.write_points(pts)
                todo -= k
        paths.append(path)
    return paths, side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=50_000_000)
    ap.add_argument("--chunk", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=HERE / "lidar_memory.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="demgen-lidar-bench-") as tmp:
        d = Path(tmp)
        t0 = time.time()
        tiles, side = write_tiles(d, args.points, args.chunk)
        t_write = time.time() - t0
        size_mb = sum(p.stat().st_size for p in tiles) / 2**20
        print(f"wrote {args.points:,} points in {len(tiles)} LAZ tiles ({size_mb:.0f} MiB) "
              f"in {t_write:.0f} s", flush=True)  # fmt: skip
        cmd = [sys.executable, "-m", "demgen", "lidar", *map(str, tiles), "-o", str(d / "out"),
               "--resolution", "1", "--chunk-size", str(args.chunk), "-q"]  # fmt: skip
        t1 = time.time()
        subprocess.run(cmd, check=True)
        wall = time.time() - t1
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        summary = json.loads((d / "out" / "lidar.json").read_text())
    cells = summary["grid"]["width"] * summary["grid"]["height"]
    result = {
        "points": args.points,
        "tiles": len(tiles),
        "format": "LAZ 1.4, point format 6 (lazrs)",
        "laz_mib": round(size_mb, 1),
        "grid": f"{summary['grid']['width']} x {summary['grid']['height']} at 1 m",
        "cells": cells,
        "chunk_size": args.chunk,
        "wall_s": round(wall, 1),
        "points_per_s": round(args.points / wall),
        "peak_rss_mib": round(peak_kb / 1024, 1),
        "grid_bytes_per_cell_budget": 32,
        "gridding_s": summary["seconds"]["gridding"],
        "dsm_outliers": summary["dsm"]["outliers"],
        "dtm_filled_cells": summary["dtm"]["filled_cells"],
        "write_tiles_s": round(t_write, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
