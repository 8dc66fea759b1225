"""Diffusion sampling speed: seconds per megapixel of scene for DDIM 25 and 50 steps, this CPU.

Samples a synthetic scene whole with :func:`demgen.inference.sampling.sample_scene` (every
window denoised together and blended at every step) and the denoiser of a recipe of
``configs/diffusion/`` (default ``image2dem_small``: image (4 bands) -> DEM (1)), at the
recipe's prediction window (twice its chip) and 25 % overlap, precision ``auto``, with and
without classifier-free guidance (guidance runs the net on a batch of 2B). Speed does not
depend on the weights, so the net is untrained (its zero-initialised layers drawn at
random so the work is real). Megapixels are scene pixels: the windows' overlap is paid
for. Writes ``benchmarks/diffusion_speed.json``.

    .venv/bin/python benchmarks/diffusion_speed.py                       # 512-px scene
    .venv/bin/python benchmarks/diffusion_speed.py --scene 96 --steps 2  # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from demgen.data.normalize import ElevationNorm, PercentileImageNorm  # noqa: E402
from demgen.inference.sampling import sample_scene  # noqa: E402
from demgen.io.jsonio import write_json  # noqa: E402
from demgen.io.raster import write_raster  # noqa: E402
from demgen.precision import resolve_precision  # noqa: E402
from demgen.tasks.diffusion_tasks import Image2DemDiffusionTask  # noqa: E402

BANDS = ["B2", "B3", "B4", "B8"]


def cpu_name() -> str:
    """The processor's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def recipe_task(config: Path) -> Image2DemDiffusionTask:
    """An untrained image -> DEM task with the recipe's denoiser and chip size."""
    cfg = yaml.safe_load(config.read_text())
    init = cfg["model"]["init_args"]
    chip = int(cfg["data"]["init_args"].get("chip_size", 64))
    norm = PercentileImageNorm(BANDS, [200.0] * 4, [3000.0] * 4)
    task = Image2DemDiffusionTask(norm.to_dict(), ElevationNorm(0.0, 1000.0).to_dict(),
                                  diffusion=init["diffusion"], chip_size=chip,
                                  pixel_size=10.0)  # fmt: skip
    with torch.no_grad():
        for p in task.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return task.eval()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path,
                    default=ROOT / "configs" / "diffusion" / "image2dem_small.yaml")  # fmt: skip
    ap.add_argument("--scene", type=int, default=512, help="scene side, px")
    ap.add_argument("--steps", type=int, nargs="+", default=[25, 50])
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "diffusion_speed.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = recipe_task(args.config)
    n = args.scene
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        y, x = np.mgrid[0:n, 0:n].astype(np.float32)
        img = np.stack([1000 + 500 * np.sin(x / (9 + k)) * np.cos(y / 13) for k in range(4)])
        src = write_raster(Path(tmp) / "image.tif", img.astype(np.float32), crs="EPSG:32633",
                           transform=from_origin(500_000, 5_200_000, 10, 10),
                           descriptions=BANDS)  # fmt: skip
        sample_scene(task, src, Path(tmp) / "warm.tif", steps=2, precision=args.precision,
                     progress=False)  # fmt: skip
        for steps in args.steps:
            for g in args.guidance:
                t0 = time.perf_counter()
                sample_scene(task, src, Path(tmp) / "s.tif", steps=steps, guidance=g,
                             precision=args.precision, progress=False)  # fmt: skip
                s = time.perf_counter() - t0
                runs.append({"ddim_steps": steps, "guidance_scale": g, "seconds": round(s, 2),
                             "s_per_megapixel": round(s / (n * n / 1e6), 1)})  # fmt: skip
                print(json.dumps(runs[-1]), flush=True)
    d = task.diffusion_config
    result = {
        "what": "sample_scene wall seconds per scene megapixel (windows blended every step)",
        "recipe": str(args.config.relative_to(ROOT))
        if args.config.is_relative_to(ROOT)
        else str(args.config),  # fmt: skip
        "model": f"ConditionalDenoiser(target 1, cond 4, base {d.base_channels}, mults "
        f"{'-'.join(map(str, d.channel_mults))}, attention {d.attention})",
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "scene_px": n,
        "window_px": int(task.spec.window),
        "overlap": 0.25,
        "precision": str(resolve_precision(args.precision)),
        "threads": torch.get_num_threads(),
        "runs": runs,
        "torch": torch.__version__,
        "machine": cpu_name(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
