"""Peak memory and wall time of `demgen evaluate` on a Sentinel-2-tile-sized pair.

Writes a 10980 x 10980 float32 reference and prediction (deflate GeoTIFFs, 10 m UTM,
smooth hills; the prediction is the reference plus noise, a few nodata holes and a
0.5 m bias) into a temporary folder, runs ``demgen evaluate`` on them in a child
process, and records that child's peak resident memory (``ru_maxrss`` of the child,
from ``os.wait4``; the same figure ``getrusage(RUSAGE_CHILDREN)`` gives for a single
child) and wall time into ``benchmarks/evaluate_memory.json``, with what the command
line alone costs (``demgen --version``) for comparison. The inputs are written by
another child so that this process stays small: a child's ``ru_maxrss`` starts from
its parent's resident size at the fork.

    nice python benchmarks/evaluate_memory.py                 # 10980 px, a few minutes
    python benchmarks/evaluate_memory.py --size 2048 --coregister
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rasterio.transform import from_origin

from demgen.io.raster import geotiff_profile, open_writer

HERE = Path(__file__).resolve().parent
STRIP = 512


def terrain(rows: np.ndarray, cols: np.ndarray, px: float = 10.0) -> np.ndarray:
    y, x = np.meshgrid(rows * px, cols * px, indexing="ij")
    return (
        800 + 300 * np.sin(x / 2300.0) * np.cos(y / 3100.0) + 120 * np.sin((x + y) / 900.0)
        + 40 * np.cos((x - 2 * y) / 410.0) + 8 * np.sin(x / 57.0) * np.sin(y / 83.0)
    ).astype(np.float32)  # fmt: skip


def write_pair(folder: Path, size: int) -> tuple[Path, Path]:
    tr = from_origin(500_000, 5_300_000, 10, 10)
    prof = geotiff_profile(width=size, height=size, count=1, dtype="float32", crs="EPSG:32633",
                           transform=tr, nodata=-9999.0)  # fmt: skip
    ref_path, pred_path = folder / "reference.tif", folder / "prediction.tif"
    rng = np.random.default_rng(0)
    cols = np.arange(size)
    with open_writer(ref_path, prof) as ref_ds, open_writer(pred_path, prof) as pred_ds:
        for r0 in range(0, size, STRIP):
            rows = np.arange(r0, min(size, r0 + STRIP))
            ref = terrain(rows, cols)
            pred = ref + 0.5 + rng.normal(0, 2.0, ref.shape).astype(np.float32)
            holes = rng.random(ref.shape) < 1e-3
            pred[holes] = -9999.0
            win = ((r0, r0 + rows.size), (0, size))
            ref_ds.write(ref, 1, window=win)
            pred_ds.write(pred, 1, window=win)
    return pred_path, ref_path


def run_child(cmd: list[str], folder: Path, parse: bool = True) -> dict:
    """Run ``cmd``; its own peak RSS (os.wait4) and wall time, and its JSON output."""
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    t0 = time.time()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed ({proc.returncode}): {err_path.read_text()[-2000:]}")
    result = {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 1)}
    if parse:
        result["metrics"] = json.loads(out_path.read_text())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--coregister", action="store_true", help="also time --coregister")
    ap.add_argument("--out", type=Path, default=HERE / "evaluate_memory.json")
    ap.add_argument("--write", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write is not None:
        write_pair(args.write, args.size)
        return
    with tempfile.TemporaryDirectory(prefix="demgen-evalmem-") as tmp:
        folder = Path(tmp)
        t0 = time.time()
        # written by a child: a child's ru_maxrss starts from its parent's resident size
        # at fork, so this process stays small for the measurements below
        subprocess.run([sys.executable, __file__, "--write", str(folder), "--size",
                        str(args.size)], check=True)  # fmt: skip
        pred, ref = folder / "prediction.tif", folder / "reference.tif"
        write_s = time.time() - t0
        runs = {}
        # what the command line costs before evaluate starts (every subcommand's imports)
        base = run_child([sys.executable, "-m", "demgen", "--version"], folder, parse=False)
        variants = [("plain", [])] + ([("coregister", ["--coregister"])] if args.coregister else [])
        for name, extra in variants:
            cmd = [sys.executable, "-m", "demgen", "evaluate", str(pred), str(ref), "--json",
                   "-o", str(folder / f"ev_{name}"), *extra]  # fmt: skip
            runs[name] = run_child(cmd, folder)
            m = runs[name].pop("metrics")
            keys = ("n_pixels", "bias_m", "rmse_m", "nmad_m", "le90_m", "ssim", "hillshade_ssim")
            runs[name]["metrics"] = {k: m[k] for k in keys}
            if "coregistration" in m:
                runs[name]["coregistration"] = m["coregistration"]
            print(name, json.dumps(runs[name]), flush=True)
        sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in (pred, ref)}
    result = {
        "size_px": args.size,
        "dtype": "float32",
        "input_mb_on_disk": sizes,
        "input_mb_in_memory_each": round(args.size**2 * 4 / 2**20, 1),
        "write_inputs_s": round(write_s, 1),
        "cli_startup_peak_rss_mb": base["peak_rss_mb"],
        "runs": runs,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },  # fmt: skip
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
