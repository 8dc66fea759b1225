"""Diffusion sampling speed: seconds per megapixel for DDIM 25 and 50 steps on this CPU.

Samples a batch of 64-px windows with the small conditional denoiser
(:class:`demgen.models.denoiser.ConditionalDenoiser` at its defaults: base 32 channels,
3 levels, attention at the lowest; image (4 bands) -> DEM (1)) and DDIM, with and without
classifier-free guidance (guidance runs the net on a batch of 2B). Speed does not depend
on the weights, so the net is untrained (its zero-initialised layers made random so the
work is real). Megapixels are window pixels: a scene sampled with overlapping windows
costs ``1 / (1 - overlap)^2`` times more per scene pixel. Writes
``benchmarks/diffusion_speed.json``.

    nice .venv/bin/python benchmarks/diffusion_speed.py            # 8 windows, 1 thread
    nice .venv/bin/python benchmarks/diffusion_speed.py --windows 2 --steps 5   # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from demgen.models.denoiser import ConditionalDenoiser  # noqa: E402
from demgen.schedulers import DDIMScheduler, guided_output, sample_loop  # noqa: E402


def cpu_name() -> str:
    """The processor's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_sampling(
    net: ConditionalDenoiser, windows: int, size: int, steps: int, scale: float
) -> float:
    """Wall seconds to DDIM-sample ``windows`` windows of ``size`` px in ``steps`` steps."""
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(windows, net.cond_channels, size, size, generator=g)
    attrs = torch.rand(windows, net.attr_dim, generator=g) if net.attr_dim else None
    noise = torch.randn(windows, net.target_channels, size, size, generator=g)
    sched = DDIMScheduler(eta=0.0)
    start = time.perf_counter()
    sample_loop(lambda x, t: guided_output(net, x, t, cond, attrs, scale), sched, noise, steps, g)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=8, help="windows sampled as one batch")
    parser.add_argument("--size", type=int, default=64, help="window size in pixels")
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 50])
    # one thread: on the shared 2-core machine two threads ran these convolutions ~5x slower
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "diffusion_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    net = ConditionalDenoiser(target_channels=1, cond_channels=4, attr_dim=4).eval()
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    megapixels = args.windows * args.size**2 / 1e6
    time_sampling(net, 2, args.size, 2, 1.0)  # warm-up: allocator, kernels

    runs = []
    for steps in args.steps:
        for scale in (1.0, 2.0):  # plain conditional; guided (one pass on 2B)
            seconds = time_sampling(net, args.windows, args.size, steps, scale)
            runs.append(
                {
                    "ddim_steps": steps,
                    "guidance_scale": scale,
                    "seconds": round(seconds, 2),
                    "s_per_megapixel": round(seconds / megapixels, 1),
                }
            )
            print(json.dumps(runs[-1]), flush=True)

    result = {
        "model": "ConditionalDenoiser(target 1, cond 4, attr 4, base 32, mults 1-2-2, attention)",
        "parameters": sum(p.numel() for p in net.parameters()),
        "window_px": args.size,
        "windows_per_batch": args.windows,
        "megapixels_per_run": megapixels,
        "threads": args.threads,
        "runs": runs,
        "note": "window pixels; overlapping scene windows cost 1/(1-overlap)^2 more per scene px",
        "torch": torch.__version__,
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
