"""The measurements behind demgen's CPU defaults: memory format, batch size, instance norm.

Each item runs in its own interpreter, on random data, warm-up excluded, best of a few:

- ``format``: the demo U-Net (base 32, depth 4, stem 4, 4 bands) and a plain U-Net
  (base 32, depth 4) training steps (256 px, batch 8, L1, fused AdamW) and the demo U-Net's
  inference (4 windows of 512 px, BatchNorm folded), in fp32 NCHW, fp32 channels_last and
  bf16 autocast + channels_last: why channels_last is the default and when bf16 pays;
- ``batch``: demo U-Net training samples/s for batch sizes 2 to 32 (256 px, channels_last);
- ``norm``: the pix2pix U-Net-256 regression step (batch 8) with its instance norm computed
  by ``nn.InstanceNorm2d(affine=True)`` or by ``nn.GroupNorm(C, C)`` (the same function),
  NCHW and channels_last.

    python benchmarks/layout.py [--only format batch norm] [--out benchmarks/layout.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _best_rate(step, items: int, warmup: int = 2, repeats: int = 4) -> float:
    """Items per second of ``step`` (best of ``repeats`` after ``warmup`` calls)."""
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return items / best


def _train_step(model, batch: int, size: int, bands: int, channels_last: bool, bf16: bool):
    x = torch.randn(batch, bands, size, size)
    y = torch.randn(batch, 1, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), fused=True)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (model(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


MODES = {"fp32 NCHW": (False, False), "fp32 channels_last": (True, False),
         "bf16 channels_last": (True, True)}  # fmt: skip


def item_format() -> dict:
    from demgen.models import build_model
    from demgen.models.fusion import fuse_conv_bn

    out: dict = {}
    for mode, (cl, bf16) in MODES.items():
        torch.manual_seed(0)
        demo = build_model("unet", in_channels=4, base=32, depth=4, stem=4)
        out[f"demo U-Net train, {mode}"] = _best_rate(_train_step(demo, 8, 256, 4, cl, bf16), 8)
        torch.manual_seed(0)
        plain = build_model("unet", in_channels=4, base=32, depth=4)
        out[f"plain U-Net train, {mode}"] = _best_rate(
            _train_step(plain, 8, 256, 4, cl, bf16), 8, warmup=1, repeats=2
        )
        model = build_model("unet", in_channels=4, base=32, depth=4, stem=4).eval()
        fuse_conv_bn(model)
        x = torch.randn(4, 4, 512, 512)
        if cl:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def infer(model=model, x=x, bf16=bf16) -> None:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                model(x)

        out[f"demo U-Net inference Mpx/s, {mode}"] = _best_rate(infer, 4 * 512 * 512) / 1e6
    return out


def item_batch() -> dict:
    from demgen.models import build_model

    out = {}
    for batch in (2, 4, 8, 16, 32):
        torch.manual_seed(0)
        model = build_model("unet", in_channels=4, base=32, depth=4, stem=4)
        step = _train_step(model, batch, 256, 4, True, False)
        out[f"batch {batch}"] = _best_rate(step, batch, repeats=max(2, 32 // batch))
    return out


def item_norm() -> dict:
    from torch import nn

    import demgen.models.pix2pix as p2p

    original = p2p.norm_layer
    out = {}
    for impl in ("InstanceNorm2d", "GroupNorm"):
        if impl == "InstanceNorm2d":
            p2p.norm_layer = lambda norm, c: (  # noqa: E731
                nn.InstanceNorm2d(c, affine=True) if norm == "instance" else original(norm, c)
            )
        else:
            p2p.norm_layer = original
        for cl in (False, True):
            torch.manual_seed(0)
            model = p2p.Pix2PixUNet(3, 1, final=None)
            step = _train_step(model, 8, 256, 3, cl, False)
            out[f"{impl}, {'channels_last' if cl else 'NCHW'}"] = _best_rate(step, 8, 1, 3)
    p2p.norm_layer = original
    return out


ITEMS = {"format": item_format, "batch": item_batch, "norm": item_norm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(ITEMS), default=list(ITEMS))
    ap.add_argument("--out", type=Path, default=HERE / "layout.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(ITEMS[args.child]()))
        return
    from demgen.io.raster import write_text_atomic

    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for name in args.only:
        proc = subprocess.run([sys.executable, __file__, "--child", name], check=True,
                              capture_output=True, text=True)  # fmt: skip
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        for key, value in results[name].items():
            unit = "" if "Mpx/s" in key else " samples/s"
            print(f"{name:7s} {key:45s} {value:8.2f}{unit}", flush=True)
    write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
