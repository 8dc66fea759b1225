"""Peak memory and time of `demgen prepare` on a full 10980 x 10980 Sentinel-2-sized tile.

Writes (window by window) a 4-band uint16 GeoTIFF of 10980 x 10980 px at 10 m in UTM 33N and
a 30 m DEM of the same ground in EPSG:4326, runs ``demgen prepare --grid image`` on them in a
subprocess and prints its peak RSS (getrusage of the child) and wall time. Everything lives
in a temporary folder (about 1 GB of input and 1.5 GB of store) deleted at the end.

Usage: python benchmarks/prepare_memory.py [SIZE] [TMPDIR]
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_bounds, from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window


def make_inputs(d: Path, size: int) -> tuple[Path, Path]:
    crs, px = "EPSG:32633", 10.0
    t = from_origin(500_000.0, 5_200_000.0, px, px)
    img = d / "tile.tif"
    prof = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=4,
        dtype="uint16",
        crs=crs,
        transform=t,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        BIGTIFF="YES",
    )
    rng = np.random.default_rng(0)
    with rasterio.open(img, "w", **prof) as dst:
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            yy, xx = np.mgrid[r0 : r0 + h, 0:size].astype(np.float32)
            base = 2000 + 800 * np.sin(xx / 300) * np.cos(yy / 250)
            for b in range(4):
                noise = rng.integers(0, 400, (h, size), dtype=np.uint16)
                dst.write(
                    (base + 300 * b).astype(np.uint16) + noise, b + 1, window=Window(0, r0, size, h)
                )
    left, bottom, right, top = transform_bounds(
        crs, "EPSG:4326", 500_000.0, 5_200_000.0 - size * px, 500_000.0 + size * px, 5_200_000.0
    )
    res = 30.0 / 111_320.0
    w, h = int((right - left) / res) + 1, int((top - bottom) / res) + 1
    dem = d / "dem.tif"
    dt = from_bounds(left, bottom, right, top, w, h)
    with rasterio.open(
        dem,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=dt,
        nodata=-9999.0,
        tiled=True,
    ) as dst:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dst.write((300 + 200 * np.sin(xx / 90) + 100 * np.cos(yy / 70)).astype(np.float32), 1)
    return img, dem


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 10980
    base = sys.argv[2] if len(sys.argv) > 2 else None
    d = Path(tempfile.mkdtemp(prefix="demgen-bench-", dir=base))
    try:
        t0 = time.time()
        img, dem = make_inputs(d, size)
        print(
            f"inputs: {size} x {size} x 4 uint16 + 30 m DEM (EPSG:4326) in {time.time() - t0:.0f} s"
        )
        cmd = [
            sys.executable,
            "-m",
            "demgen",
            "prepare",
            "--image",
            str(img),
            "--dem",
            str(dem),
            "--grid",
            "image",
            "-o",
            str(d / "store"),
            "--chip-size",
            "256",
            "-q",
        ]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(r.stdout.strip())
        if r.returncode:
            print(r.stderr.strip())
        print(f"prepare: exit {r.returncode}, wall {wall:.0f} s, peak RSS {peak_mb:.0f} MB")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
