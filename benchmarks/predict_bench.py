"""Scene prediction speed (Mpx/s) and peak memory of `demgen predict` on large scenes.

Makes an N x N 4-band uint16 image window by window (never whole in memory), saves
a checkpoint with the demo's architecture (speed and memory do not depend on the
weights), runs `demgen predict` in a subprocess with the default 25 % overlap and
reports the prediction time and Mpx/s (as `demgen predict` measures it, without
interpreter start-up and checkpoint loading), the whole command's wall time, and
the subprocess's peak resident memory.

    python benchmarks/predict_bench.py --size 4096
    python benchmarks/predict_bench.py --size 10980
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning
import numpy as np
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from demgen.data.normalize import ElevationNorm, ImageNorm
from demgen.demo import DemoConfig
from demgen.io.raster import geotiff_profile, open_writer
from demgen.tasks.regression import DEMRegressionTask


def make_image(path: Path, n: int, block: int = 1024) -> None:
    """A smooth-plus-noise 4-band image written block by block."""
    profile = geotiff_profile(width=n, height=n, count=4, dtype="uint16", crs="EPSG:32633",
                              transform=from_origin(500_000, 5_200_000, 10, 10))  # fmt: skip
    rng = np.random.default_rng(0)
    with open_writer(path, profile, descriptions=["B2", "B3", "B4", "B8"]) as dst:
        for r in range(0, n, block):
            for c in range(0, n, block):
                h, w = min(block, n - r), min(block, n - c)
                y, x = np.mgrid[r : r + h, c : c + w]
                base = 1500 + 700 * np.sin(x / 97.0) * np.cos(y / 131.0)
                img = base[None] + rng.normal(0, 80, (4, h, w))
                dst.write(np.clip(img, 1, 10000).astype(np.uint16), window=Window(c, r, w, h))


def make_checkpoint(path: Path) -> None:
    """The demo's architecture with random weights, saved as a Lightning checkpoint."""
    cfg = DemoConfig()
    inorm = ImageNorm(["B2", "B3", "B4", "B8"], 1e-4, [0.15] * 4, [0.07] * 4)
    task = DEMRegressionTask(
        inorm.to_dict(), ElevationNorm(0.0, 1500.0).to_dict(), base=cfg.base, depth=cfg.depth,
        stem=cfg.stem, chip_size=cfg.chip_size, pixel_size=cfg.pixel_size,
    )  # fmt: skip
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the big temporary files")
    ap.add_argument("--out", type=Path, default=None, help="append the result as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        make_image(tmp / "image.tif", args.size)
        make_checkpoint(tmp / "model.ckpt")
        print(f"input ready in {time.time() - t0:.0f} s", flush=True)
        cmd = [sys.executable, "-m", "demgen", "predict", str(tmp / "model.ckpt"),
               str(tmp / "image.tif"), "-o", str(tmp / "pred.tif"), "-q",
               "--precision", args.precision]  # fmt: skip
        t0 = time.time()
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.time() - t0
    # `demgen predict` prints "wrote PATH (S s)": the time spent predicting that scene.
    predict_s = float(re.search(r"\(([\d.]+) s\)", proc.stdout).group(1))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "size": args.size,
        "megapixels": args.size**2 / 1e6,
        "predict_s": predict_s,
        "mpx_per_s": round(args.size**2 / 1e6 / predict_s, 3),
        "wall_s_with_startup": round(wall, 1),
        "peak_rss_mb": round(peak_mb),
        "precision": args.precision,
        "overlap": 0.25,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
