"""Peak memory and wall time of `demgen evaluate` on a Sentinel-2-tile-sized image pair.

Writes a 10980 x 10980 x 4 band uint16 reference and prediction (reflectance x 10000,
deflate GeoTIFFs, 10 m UTM, bands B2 B3 B4 B8 with descriptions; smooth fields per band;
the prediction is the reference plus noise and a 2 % gain; the reference declares nodata
0 over a few holes, the prediction declares none and has a no-data corner of 0 in every
band, Sentinel-2 L2A style) into a temporary folder, runs ``demgen evaluate`` on them in a
child process, and records that child's peak resident memory (``ru_maxrss`` of the
child, from ``os.wait4``; the figure ``getrusage(RUSAGE_CHILDREN)`` gives for a single
child) and wall time into ``benchmarks/evaluate_image_memory.json``, with what the
command line alone costs (``demgen --version``) for comparison. The inputs are written by
another child so that this process stays small (a child's ``ru_maxrss`` starts from its
parent's resident size at the fork). Modelled on ``benchmarks/evaluate_memory.py``.

Before image evaluation was windowed, this pair needed about 60 bytes per pixel and band
(~29 GB): out of memory on a 24 GB machine.

    nice python benchmarks/evaluate_image_memory.py                # 10980 px, minutes
    python benchmarks/evaluate_image_memory.py --size 5490         # a quarter of the tile
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
BANDS = ("B2", "B3", "B4", "B8")


def reflectance(rows: np.ndarray, cols: np.ndarray, px: float = 10.0) -> np.ndarray:
    """(4, rows, cols) float32 reflectance x 10000: smooth fields, one phase per band."""
    y, x = np.meshgrid(rows * px, cols * px, indexing="ij")
    out = np.empty((len(BANDS), rows.size, cols.size), np.float32)
    for b in range(len(BANDS)):
        f = (
            np.sin(x / (900.0 + 170 * b)) * np.cos(y / (1300.0 - 90 * b))
            + 0.5 * np.sin((x + 2 * y) / (310.0 + 40 * b))
            + 0.2 * np.cos(x / 37.0 + y / 53.0)
        )
        out[b] = 800 + 400 * b + 600 * f
    return out


def write_pair(folder: Path, size: int) -> tuple[Path, Path]:
    tr = from_origin(500_000, 5_300_000, 10, 10)
    kw = {"width": size, "height": size, "count": len(BANDS), "dtype": "uint16",
          "crs": "EPSG:32633", "transform": tr}  # fmt: skip
    ref_path, pred_path = folder / "reference.tif", folder / "prediction.tif"
    rng = np.random.default_rng(0)
    cols = np.arange(size)
    with (
        open_writer(ref_path, geotiff_profile(**kw, nodata=0), descriptions=BANDS) as ref_ds,
        open_writer(pred_path, geotiff_profile(**kw), descriptions=BANDS) as pred_ds,
    ):
        for r0 in range(0, size, STRIP):
            rows = np.arange(r0, min(size, r0 + STRIP))
            ref = reflectance(rows, cols)
            pred = 1.02 * ref + rng.normal(0, 60.0, ref.shape).astype(np.float32)
            ref, pred = (np.clip(a, 1, 20000).round().astype(np.uint16) for a in (ref, pred))
            ref[:, rng.random(ref.shape[1:]) < 1e-4] = 0  # declared nodata
            r_hole = (rows >= size // 3) & (rows < size // 3 + size // 50)
            ref[:, r_hole, size // 2 : size // 2 + size // 40] = 0
            pred[:, rows >= size - size // 10, : size // 8] = 0  # S2's no-data: 0 in every band
            win = ((r0, r0 + rows.size), (0, size))
            ref_ds.write(ref, window=win)
            pred_ds.write(pred, window=win)
    return pred_path, ref_path


def run_child(cmd: list[str], folder: Path, parse: bool = True) -> dict:
    """Run ``cmd``; its own peak RSS (os.wait4) and wall time, and its JSON output."""
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    t0 = time.time()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"evaluate failed ({code}): {err_path.read_text()[-2000:]}")
    result = {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 1)}
    if parse:
        result["metrics"] = json.loads(out_path.read_text())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--window-rows", type=int, default=None, help="passed to demgen evaluate")
    ap.add_argument("--out", type=Path, default=HERE / "evaluate_image_memory.json")
    ap.add_argument("--note", default=None, help="a note to record in the JSON")
    ap.add_argument("--write", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write is not None:
        write_pair(args.write, args.size)
        return
    with tempfile.TemporaryDirectory(prefix="demgen-evalimgmem-") as tmp:
        folder = Path(tmp)
        t0 = time.time()
        subprocess.run([sys.executable, __file__, "--write", str(folder), "--size",
                        str(args.size)], check=True)  # fmt: skip
        pred, ref = folder / "prediction.tif", folder / "reference.tif"
        write_s = time.time() - t0
        base = run_child([sys.executable, "-m", "demgen", "--version"], folder, parse=False)
        extra = [] if args.window_rows is None else ["--window-rows", str(args.window_rows)]
        cmd = [sys.executable, "-m", "demgen", "evaluate", str(pred), str(ref), "--json",
               "-o", str(folder / "ev"), *extra]  # fmt: skip
        run = run_child(cmd, folder)
        m = run.pop("metrics")
        keys = ("n_pixels", "psnr_db", "ssim", "ms_ssim", "sam_deg", "ergas", "rmse", "mae",
                "fd_chips", "fd_demgen_rand", "data_range")  # fmt: skip
        run["metrics"] = {k: m[k] for k in keys}
        print(json.dumps(run), flush=True)
        sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in (pred, ref)}
    result = {
        "size_px": args.size,
        "bands": len(BANDS),
        "dtype": "uint16",
        "window_rows": args.window_rows or 256,
        "input_mb_on_disk": sizes,
        "input_mb_in_memory_each_uint16": round(args.size**2 * len(BANDS) * 2 / 2**20, 1),
        "whole_array_estimate_mb": round(args.size**2 * len(BANDS) * 60 / 2**20),
        "write_inputs_s": round(write_s, 1),
        "cli_startup_peak_rss_mb": base["peak_rss_mb"],
        "run": run,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    if args.note:
        result["note"] = args.note
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
