"""The performance benchmark: training and prediction speed, FLOP efficiency, memory.

One run (``make bench``, or ``python benchmarks/bench.py``) measures, each item in its
own subprocess so that its peak resident memory is its own:

- the bf16 and fp32 matmul peak (4096 x 4096, best of a few);
- training samples/s of the pix2pix step (U-Net-256 generator ``Pix2PixUNet(3, 1)`` +
  ``PatchGAN(4)``: one D step and one G step as in ``Pix2PixTask``) and of the U-Net
  regression step (the same U-Net-256 with an unbounded head, masked L1, fused AdamW),
  256 x 256, batch 8, in plain fp32 NCHW, in ``auto`` precision (what demgen trains with
  here: channels_last, plus bf16 autocast where :mod:`demgen.precision` finds bf16 fast)
  and in forced bf16 (bf16 autocast + channels_last), warm-up steps excluded;
- each step's FLOPs (forward + backward, ``torch.utils.flop_counter``), its achieved
  GFLOP/s and that as a percentage of both measured matmul peaks;
- scene prediction Mpx/s of ``demgen predict`` on a 4096 x 4096 scene with 25 % overlap
  (the demo's architecture, as ``benchmarks/predict_bench.py``; predict-only time), with
  ``--precision auto``, ``32`` and ``bf16``;
- the training loader's throughput (chips/s of ``ChipDataModule``'s train loader with
  augmentation), to show the input path outruns the model;
- a torch.profiler profile of the U-Net-256 regression step in ``auto`` precision
  (top ops by self CPU time).

It writes ``benchmarks/results.json`` and ``benchmarks/results.md`` and prints the table.

    python benchmarks/bench.py                 # everything, about 5 minutes on 2 cores
    python benchmarks/bench.py --only matmul_bf16 regression_auto
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from demgen.io.raster import write_text_atomic
from demgen.precision import cpu_flags, precision_reason

HERE = Path(__file__).resolve().parent
BATCH, CHIP = 8, 256
PREDICT_SIZE = 4096


def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory (MB) of this process (or of its waited-for children)."""
    return resource.getrusage(who).ru_maxrss / 1024


# -- items: each runs in a child process and returns a dict --------------------------------


def item_matmul(dtype_name: str) -> dict:
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    n = 4096
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    torch.mm(a, b)  # warm-up
    repeats = 6 if dtype is torch.bfloat16 else 3
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2 * n**3 / best / 1e9, "best_s": best, "repeats": repeats}


def _norms(bands: list[str]) -> tuple[dict, dict]:
    from demgen.data.normalize import ElevationNorm, ImageNorm

    inorm = ImageNorm(bands, 1e-4, [0.15] * len(bands), [0.07] * len(bands))
    return inorm.to_dict(), ElevationNorm(0.0, 1500.0).to_dict()


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(BATCH, 1, CHIP, CHIP, generator=g) > 0.05
    target = torch.randn(BATCH, 1, CHIP, CHIP, generator=g).clamp(-1, 1) * mask
    return {"image": torch.randn(BATCH, 3, CHIP, CHIP, generator=g), "target": target, "mask": mask}


MODES = {  # mode: (precision for resolve_precision, channels_last)
    "fp32": ("32", False),  # plain PyTorch: the baseline
    "auto": ("auto", True),  # what demgen trains with on this machine
    "bf16": ("bf16", True),  # bf16 autocast forced
}


def build_step(task_name: str, mode: str):
    """The training step of ``task_name`` (``pix2pix`` or ``regression``) as a closure,
    in ``mode`` (a key of MODES): its precision, and channels_last for every network
    (``set_channels_last``, as ``Trainer.fit`` does) and the batch, or fp32 NCHW.
    """
    from demgen.precision import autocast_dtype, resolve_precision
    from demgen.tasks.pix2pix import Pix2PixTask, set_requires_grad
    from demgen.tasks.regression import DEMRegressionTask

    precision_arg, channels_last = MODES[mode]
    precision = resolve_precision(precision_arg, "cpu")
    dtype = autocast_dtype(precision)
    inorm, enorm = _norms(["B4", "B3", "B2"])
    batch = _batch()
    if task_name == "pix2pix":
        task = Pix2PixTask(inorm, enorm, chip_size=CHIP)
        opt_g, opt_d = task.configure_optimizers()[0]
    else:
        task = DEMRegressionTask(
            inorm,
            enorm,
            generator="pix2pix",
            generator_kwargs={"final": None},
            chip_size=CHIP,
        )
        opt = task.configure_optimizers()["optimizer"]
    task.train()
    task.set_channels_last(channels_last)
    if channels_last:
        batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}

    def ctx():
        return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)

    def pix2pix_step() -> None:
        image, target, mask = batch["image"], batch["target"], batch["mask"]
        with ctx():
            fake = task.hide_invalid(task(image), target, mask)
            loss_d = task.discriminator_loss(image, target, fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        set_requires_grad(task.discriminator, False)
        with ctx():
            terms = task.generator_terms(batch, fake)
        opt_g.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt_g.step()
        set_requires_grad(task.discriminator, True)

    def regression_step() -> None:
        with ctx():
            loss = task.compute_loss(task(batch["image"]), batch["target"], batch["mask"])
        opt.zero_grad(set_to_none=True)
        loss["loss"].backward()
        opt.step()

    step = pix2pix_step if task_name == "pix2pix" else regression_step
    return step, precision


def item_train(task_name: str, mode: str, warmup: int, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    step, precision = build_step(task_name, mode)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    sec = sum(times) / len(times)
    return {
        "precision": precision,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "step_s": sec,
        "samples_per_s": BATCH / sec,
        "flops_per_step": flops,
        "gflops": flops / sec / 1e9,
    }


def item_profile(steps: int = 3) -> dict:
    """torch.profiler over ``steps`` U-Net-256 regression steps in auto precision."""
    from torch.profiler import ProfilerActivity, profile

    step, precision = build_step("regression", "auto")
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [
        {
            "op": e.key,
            "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "share": e.self_cpu_time_total / total,
            "calls_per_step": e.count / steps,
        }
        for e in events[:8]
    ]
    return {
        "precision": precision,
        "steps": steps,
        "top": top,
        "total_self_cpu_ms_per_step": total / 1e3 / steps,
    }


def item_predict(precision: str, folder: str) -> dict:
    """``demgen predict`` on the scene in ``folder``, in a subprocess; its own peak RSS."""
    folder = Path(folder)
    cmd = [
        sys.executable,
        "-m",
        "demgen",
        "predict",
        str(folder / "model.ckpt"),
        str(folder / "image.tif"),
        "-o",
        str(folder / f"pred_{precision}.tif"),
        "-q",
        "--precision",
        precision,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    predict_s = float(re.search(r"\(([\d.]+) s\)", proc.stdout).group(1))
    mpx = PREDICT_SIZE**2 / 1e6
    return {
        "precision": precision,
        "predict_s": predict_s,
        "mpx_per_s": mpx / predict_s,
        "wall_s_with_startup": wall,
        "child_peak_rss_mb": rss_mb(resource.RUSAGE_CHILDREN),
    }


def predict_flops() -> dict:
    """FLOPs ``demgen predict`` spends on a PREDICT_SIZE scene: windows x model forward."""
    from torch.utils.flop_counter import FlopCounterMode

    from demgen.demo import DemoConfig
    from demgen.inference.scene import window_starts
    from demgen.tasks.regression import DEMRegressionTask

    cfg = DemoConfig()
    inorm, enorm = _norms(["B2", "B3", "B4", "B8"])
    task = DEMRegressionTask(
        inorm, enorm, base=cfg.base, depth=cfg.depth, stem=cfg.stem, chip_size=cfg.chip_size
    ).eval()
    win = 2 * cfg.chip_size  # demgen predict's default window
    stride = max(1, int(round(win * 0.75)))
    n_windows = len(window_starts(PREDICT_SIZE, win, stride)) ** 2
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        task(torch.zeros(1, 4, win, win))
    per_window = counter.get_total_flops()
    return {
        "window": win,
        "n_windows": n_windows,
        "flops_per_window": per_window,
        "flops": per_window * n_windows,
    }


def item_loader(workers: int, folder: str) -> dict:
    """Chips/s of ChipDataModule's augmenting train loader (batch 8) over the store, the
    batched augmentation included."""
    from demgen.data.datamodule import ChipDataModule

    dm = ChipDataModule(
        str(Path(folder) / "store"),
        batch_size=BATCH,
        num_workers=workers,
        augment=True,
        persistent_workers=workers > 0,
    )
    loader = dm.train_dataloader()
    for _ in loader:  # warm-up: worker start-up and page cache
        pass
    n, t0 = 0, time.perf_counter()
    epochs = 0
    while time.perf_counter() - t0 < 4.0 or epochs < 2:
        for b in loader:  # and the batched flips/rotations the Trainer applies after transfer
            n += dm.on_after_batch_transfer(b, 0)["image"].shape[0]
        epochs += 1
    sec = time.perf_counter() - t0
    return {
        "workers": workers,
        "chips": n,
        "chips_per_s": n / sec,
        "train_chips_per_epoch": len(dm.dataset("train")),
    }


def make_store(folder: Path, size: int = 2048) -> None:
    """A 3-band uint16 image and a DEM, prepared into a chip store of 256-px chips."""
    import numpy as np
    from rasterio.transform import from_origin

    from demgen.data.prepare import PrepareConfig, prepare_rasters
    from demgen.io.raster import write_raster

    t = from_origin(500_000.0, 5_200_000.0, 10.0, 10.0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    dem = (300 + 200 * np.sin(xx / 150.0) * np.cos(yy / 210.0)).astype(np.float32)
    img = np.clip(1500 + 3 * dem[None] + rng.normal(0, 80, (3, size, size)), 1, 10000)
    write_raster(folder / "dem.tif", dem, crs="EPSG:32633", transform=t, nodata=-9999.0)
    write_raster(
        folder / "img.tif",
        img.astype(np.uint16),
        crs="EPSG:32633",
        transform=t,
        descriptions=["B4", "B3", "B2"],
    )
    prepare_rasters(
        [folder / "img.tif"],
        [folder / "dem.tif"],
        folder / "store",
        PrepareConfig(chip_size=CHIP, block=2),
    )


def run_child(args: list[str], timeout: float = 400) -> dict:
    """Run one item in a fresh interpreter; it prints one JSON line last, with its peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode:
        raise RuntimeError(f"item {args} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["item_wall_s"] = time.perf_counter() - t0
    return out


def child_main(args: list[str]) -> None:
    name, *rest = args
    if name == "matmul":
        out = item_matmul(rest[0])
    elif name == "train":
        out = item_train(rest[0], rest[1], int(rest[2]), int(rest[3]))
    elif name == "profile":
        out = item_profile()
    elif name == "predict":
        out = item_predict(rest[0], rest[1])
    elif name == "predict_flops":
        out = predict_flops()
    elif name == "loader":
        out = item_loader(int(rest[0]), rest[1])
    elif name == "make_inputs":
        folder = Path(rest[0])
        sys.path.insert(0, str(HERE))
        from predict_bench import make_checkpoint, make_image

        t0 = time.perf_counter()
        make_image(folder / "image.tif", PREDICT_SIZE)
        make_checkpoint(folder / "model.ckpt")
        make_store(folder)
        out = {"seconds": time.perf_counter() - t0}
    else:
        raise SystemExit(f"unknown item {name}")
    out["peak_rss_mb"] = rss_mb()
    print(json.dumps(out))


# -- report -----------------------------------------------------------------------------------

TRAIN_ITEMS = {  # name: (task, mode, warm-up steps, timed steps)
    f"{task}_{mode}": (task, mode, 2, 4 if task == "pix2pix" else 6)
    for task in ("pix2pix", "regression")
    for mode in MODES
}
PREDICT_PRECISIONS = ("auto", "32", "bf16")
ALL = [
    "matmul_bf16",
    "matmul_fp32",
    *TRAIN_ITEMS,
    *(f"predict_{p}" for p in PREDICT_PRECISIONS),
    "loader_0",
    "loader_2",
    "profile",
]


def pct(x: float | None, peak: float | None) -> str:
    return f"{100 * x / peak:.0f} %" if x and peak else "-"


def table(r: dict) -> str:
    peaks = {k: r.get(f"matmul_{k}", {}).get("gflops") for k in ("bf16", "fp32")}
    rows = [
        "| item | precision | throughput | GFLOP per step / scene | achieved GFLOP/s "
        "| % of bf16 peak | % of fp32 peak | peak RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in ("bf16", "fp32"):
        m = r.get(f"matmul_{k}")
        if m:
            rows.append(
                f"| matmul 4096 x 4096 (peak) | {k} | {m['best_s'] * 1e3:.0f} ms | "
                f"{2 * 4096**3 / 1e9:.0f} | {m['gflops']:.0f} | "
                f"{pct(m['gflops'], peaks['bf16'])} | "
                f"{pct(m['gflops'], peaks['fp32'])} | {m['peak_rss_mb']:.0f} MB |"
            )
    labels = {"pix2pix": "pix2pix train step (G + D)", "regression": "U-Net-256 regression step"}
    for name, (task, mode, *_) in TRAIN_ITEMS.items():
        t = r.get(name)
        if t:
            prec = {
                "fp32": "fp32 NCHW",
                "auto": f"auto ({t['precision']}, channels_last)",
                "bf16": "bf16 forced (channels_last)",
            }[mode]
            rows.append(
                f"| {labels[task]} | {prec} | {t['samples_per_s']:.2f} samples/s | "
                f"{t['flops_per_step'] / 1e9:.0f} | {t['gflops']:.0f} | "
                f"{pct(t['gflops'], peaks['bf16'])} | {pct(t['gflops'], peaks['fp32'])} | "
                f"{t['peak_rss_mb']:.0f} MB |"
            )
    fl = r.get("predict_flops", {}).get("flops")
    for p in PREDICT_PRECISIONS:
        t = r.get(f"predict_{p}")
        if t:
            g = fl / t["predict_s"] / 1e9 if fl else None
            rows.append(
                f"| predict 4096 x 4096, 25 % overlap | {p} | {t['mpx_per_s']:.2f} Mpx/s "
                f"({t['predict_s']:.1f} s) | {fl / 1e9 if fl else 0:.0f} | "
                f"{g or 0:.0f} | {pct(g, peaks['bf16'])} | {pct(g, peaks['fp32'])} | "
                f"{t['child_peak_rss_mb']:.0f} MB |"
            )
    for w in (0, 2):
        t = r.get(f"loader_{w}")
        if t:
            rows.append(
                f"| train loader (augmenting), {w} workers | - | "
                f"{t['chips_per_s']:.0f} chips/s | - | - | - | - | "
                f"{t['peak_rss_mb']:.0f} MB |"
            )
    return "\n".join(rows)


def profile_table(p: dict) -> str:
    rows = [
        f"Top ops by self CPU time, U-Net-256 regression step, auto ({p['precision']}), "
        f"{p['steps']} profiled steps (total self CPU "
        f"{p['total_self_cpu_ms_per_step']:.0f} ms per step):",
        "",
        "| op | self CPU per step | share | calls per step |",
        "| --- | ---: | ---: | ---: |",
    ]
    for e in p["top"]:
        rows.append(
            f"| `{e['op']}` | {e['self_cpu_ms_per_step']:.0f} ms | "
            f"{100 * e['share']:.1f} % | {e['calls_per_step']:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=ALL, help="run only these items")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--md", type=Path, default=HERE / "results.md")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return
    items = args.only or ALL
    t_start = time.perf_counter()
    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f),
            "auto_precision": precision_reason("cpu"),
            "torch": torch.__version__,
            "batch": BATCH,
            "chip": CHIP,
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        if any(i.startswith(("predict", "loader")) for i in items):
            results["make_inputs"] = run_child(["make_inputs", tmp])
            print(f"inputs ready in {results['make_inputs']['seconds']:.0f} s", flush=True)
        if any(i.startswith("predict") for i in items):
            results["predict_flops"] = run_child(["predict_flops"])
        for name in items:
            if name.startswith("matmul_"):
                argv = ["matmul", name.split("_")[1]]
            elif name in TRAIN_ITEMS:
                argv = ["train", *map(str, TRAIN_ITEMS[name])]
            elif name.startswith("predict_"):
                argv = ["predict", name.split("_")[1], tmp]
            elif name.startswith("loader_"):
                argv = ["loader", name.split("_")[1], tmp]
            else:
                argv = ["profile"]
            results[name] = run_child(argv)
            print(f"{name}: done in {results[name]['item_wall_s']:.0f} s", flush=True)
    results["total_wall_s"] = time.perf_counter() - t_start
    write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")
    md = [
        f"Measured by `python benchmarks/bench.py` ({results['machine']['cores']} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH}, "
        f"{CHIP} x {CHIP} chips; total {results['total_wall_s']:.0f} s; CPU bf16 flags: "
        f"{', '.join(results['machine']['cpu_bf16_flags']) or 'none'}; auto = "
        f"{results['machine']['auto_precision']}). The U-Net-256 is "
        "the pix2pix generator `Pix2PixUNet(3, 1)` (54.4 M parameters); the regression step "
        "uses it with an unbounded head and masked L1. Prediction uses the demo's U-Net "
        "(base 32, depth 4, stem 4) with 512-px windows, BatchNorm folded into the convs.",
        "",
        table(results),
    ]
    if "profile" in results:
        md += ["", profile_table(results["profile"])]
    text = "\n".join(md) + "\n"
    if args.md.exists():  # keep a hand-written analysis below the marker
        old = args.md.read_text()
        marker = "<!-- analysis -->"
        if marker in old:
            text += "\n" + old[old.index(marker) :]
    write_text_atomic(args.md, text)
    print(text)


if __name__ == "__main__":
    main()
