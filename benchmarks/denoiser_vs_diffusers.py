"""demgen's ConditionalDenoiser against diffusers' UNet2DModel of the same shape, on this CPU.

The question of the README's diffusion section: would diffusers' U-Net be faster? Both
nets get the recipe's widths (``configs/diffusion/image2dem_small.yaml``: base 32, levels
1-2-2, one residual block a level, attention at the lowest level, GroupNorm 8), 5 input
channels (noisy heights + 4 bands), 1 output; timed as a training step (forward, MSE,
backward; Adam excluded) and as a sampling forward pass (no grad), each the median of
``--repeats`` after a warm-up, at precision fp32 and with bf16 autocast. diffusers is not a
dependency: install it anywhere and give ``--diffusers-path`` (its site folder, appended to
``sys.path`` after demgen's, so the venv's torch and numpy are used). Writes
``benchmarks/denoiser_vs_diffusers.json``.

    pip install --target /tmp/dif diffusers
    .venv/bin/python benchmarks/denoiser_vs_diffusers.py --diffusers-path /tmp/dif
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from demgen.io.jsonio import write_json  # noqa: E402
from demgen.models.denoiser import ConditionalDenoiser  # noqa: E402


def ours() -> torch.nn.Module:
    return ConditionalDenoiser(
        target_channels=1, cond_channels=4, base_channels=32, channel_mults=(1, 2, 2),
        num_res_blocks=1, attention=True,
    )  # fmt: skip


def theirs() -> torch.nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(
        in_channels=5, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    )  # fmt: skip


def call(net: torch.nn.Module, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor):
    if isinstance(net, ConditionalDenoiser):
        return net(x, t, cond=cond)
    return net(torch.cat([x, cond], dim=1), t).sample


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--diffusers-path", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "denoiser_vs_diffusers.json")  # fmt: skip
    args = ap.parse_args(argv)
    if args.diffusers_path:
        sys.path.append(str(args.diffusers_path))
    import diffusers

    torch.manual_seed(0)
    b, n = args.batch, args.size
    x, cond = torch.randn(b, 1, n, n), torch.randn(b, 4, n, n)
    t = torch.randint(0, 1000, (b,))
    rows = {}
    for name, make in (("demgen", ours), ("diffusers", theirs)):
        net = make().to(memory_format=torch.channels_last)
        params = sum(p.numel() for p in net.parameters())
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"

            def train_step(net=net, bf16=bf16) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = call(net, x, cond, t).float().pow(2).mean()
                loss.backward()

            def sample_step(net=net, bf16=bf16) -> None:
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    call(net, x, cond, t)

            rows[f"{name}_{precision}"] = {
                "parameters": params,
                "train_samples_per_s": round(b / timed(train_step, args.repeats), 2),
                "sample_windows_per_s": round(b / timed(sample_step, args.repeats), 2),
            }
            print(name, precision, rows[f"{name}_{precision}"], flush=True)
    res = {
        "what": "ConditionalDenoiser vs diffusers UNet2DModel, same widths, this CPU",
        "diffusers": diffusers.__version__, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "batch": b, "size_px": n, "results": rows,
    }  # fmt: skip
    write_json(args.out, res)
    return res


if __name__ == "__main__":
    main()
