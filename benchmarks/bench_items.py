"""The items of ``benchmarks/bench.py``, each run in its own interpreter (``python
benchmarks/bench_items.py ITEM ARGS...``), which prints one JSON line last: the item's
measurements and its peak resident memory. See ``bench.py`` for what each item measures.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

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


if __name__ == "__main__":
    child_main(sys.argv[1:])
