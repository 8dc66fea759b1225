"""The GPU path, measured: training steps, scene prediction and bf16 vs fp32 accuracy.

What it measures, on the first CUDA device (``benchmarks/gpu_check.sh`` runs it on a GPU
machine, under 5 minutes):

- the device: name, compute capability, native bf16 (capability >= 8.0, as
  :mod:`demgen.precision` decides), memory, the dense bf16 peak from a small table of
  datasheet numbers (``PEAKS``; unknown GPUs: null), and a measured bf16 matmul rate;
- training samples/s of two steps, each in (a) fp32 NCHW (how the code ran before
  :mod:`demgen.precision`: no autocast, contiguous tensors; PyTorch's defaults, so cuDNN
  may use TF32, reported as ``tf32``), (b) demgen's ``auto`` (bf16 autocast where the GPU
  has native bf16, channels_last networks and batches) and (c) (b) with the networks under
  ``torch.compile`` (skipped with its error when compiling fails): the demo's U-Net
  (``DEMRegressionTask`` with ``configs/demo.yaml``'s architecture, 4 bands) at 256 px,
  batch 16, and the Sat2DEM pix2pix step (``Pix2PixTask``: U-Net-256 generator + PatchGAN,
  one D and one G step) at 256 px, batch 8, as ``benchmarks/bench_items.py`` builds it;
  each with its ratio to (a), its FLOPs per step (``torch.utils.flop_counter``, forward +
  backward), achieved TFLOP/s and % of the bf16 peak;
- scene prediction Mpx/s of :func:`demgen.inference.scene.predict_scene` on a synthetic
  4096 x 4096 4-band image (the demo's architecture, random weights, as
  ``benchmarks/predict_bench.py``), in ``auto`` and in fp32, after a small warm-up scene;
- the held-out MAE after the same short training in fp32 and in bf16: ``demgen fit``
  (in process, :func:`demgen.training.fit`) of ``configs/quick.yaml`` for N steps with the
  same seed and world, then the test split scored as ``demgen test`` does
  (:func:`demgen.scoring.score_checkpoint`) from each run's ``last.ckpt``.

Each measurement runs in its own child process with a timeout inside one overall budget
(``--budget-s``); one that fails or runs out of time is reported as ``{"skipped": why}``
and the rest still run. Without a CUDA device every part is ``{"skipped": "no CUDA
device"}`` and the script ends at once (``--smoke-cpu`` instead runs each measurement on
the CPU at tiny sizes, to check the code path: no number of it is a GPU measurement).

    python benchmarks/gpu_check.py --out gpu_check.json            # about 4 minutes on a GPU
    python benchmarks/gpu_check.py --quick --out gpu_check.json    # fewer steps, 1024 px scene
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MARK = "GPU_CHECK_RESULT "
NO_CUDA = "no CUDA device"

#: Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a pattern of the device name.
#: First match wins; None: not in the table.
PEAKS: list[tuple[str, float | None, str]] = [
    (r"H200 NVL", 835.5, "NVIDIA H200 NVL datasheet: 1,671 TFLOPS bf16 with sparsity"),
    (r"H200", 989.4, "NVIDIA H200 datasheet (SXM): 1,979 TFLOPS bf16 with sparsity"),
    (r"H100 PCIe", 756.5, "NVIDIA H100 datasheet (PCIe): 1,513 TFLOPS bf16 with sparsity"),
    (r"H100 NVL", None, "not in this table"),
    (r"H100", 989.4, "NVIDIA H100 datasheet (SXM): 1,979 TFLOPS bf16 with sparsity"),
    (r"A100", 312.0, "NVIDIA A100 datasheet: 312 TFLOPS bf16 dense (624 with sparsity)"),
    (r"\bL4\b", 121.0, "NVIDIA L4 datasheet: 242 TFLOPS bf16 with sparsity"),
    (r"RTX 4090", 165.2, "NVIDIA Ada Lovelace whitepaper: 165.2 TFLOPS bf16, FP32 accumulate"),
]
#: The training step's 10x target: demgen's best mode against fp32 NCHW.
TARGET_RATIO = 10.0

MODELS = {  # name: (chip px, batch)
    "unet": (256, 16),
    "pix2pix": (256, 8),
}
MODES = {  # mode: (precision for resolve_precision, channels_last, torch.compile)
    "fp32_nchw": ("32", False, False),
    "auto": ("auto", True, False),
    "auto_compile": ("auto", True, True),
}
FULL = {"warmup": 5, "steps": 20, "predict_size": 4096, "mae_steps": 300, "matmul_n": 8192}
QUICK = {"warmup": 2, "steps": 5, "predict_size": 1024, "mae_steps": 60, "matmul_n": 4096}
#: --smoke-cpu: every code path on the CPU at tiny sizes (not a measurement)
SMOKE = {
    "warmup": 1, "steps": 1, "predict_size": 256, "mae_steps": 16, "matmul_n": 256,
    "chip": 64, "batch": {"unet": 2, "pix2pix": 1},
    "pix2pix_generator": {"base": 8, "depth": 6},
    "mae_world": {"n_scenes": 4, "size": 256, "chip_size": 64, "batch_size": 4},
}  # fmt: skip
#: child timeouts (s), each also capped by what is left of the budget
TIMEOUTS = {"train": 90, "compile": 150, "predict": 120, "mae": 180}


def peak_for(name: str) -> dict:
    for pattern, tflops, source in PEAKS:
        if re.search(pattern, name):
            return {"bf16_dense_tflops": tflops, "source": source}
    return {"bf16_dense_tflops": None, "source": "not in this table"}


# -- child measurements ---------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _norms(bands: list[str]) -> tuple[dict, dict]:
    from demgen.data.normalize import ElevationNorm, ImageNorm

    inorm = ImageNorm(bands, 1e-4, [0.15] * len(bands), [0.07] * len(bands))
    return inorm.to_dict(), ElevationNorm(0.0, 1500.0).to_dict()


def build_step(model: str, mode: str, device: str, s: dict):
    """``(step, info)``: one training step of ``model`` in ``mode`` on ``device`` as a
    closure, on a fixed random batch."""
    import torch

    from demgen.demo import DemoConfig
    from demgen.precision import autocast_dtype, resolve_precision
    from demgen.tasks.pix2pix import Pix2PixTask, set_requires_grad
    from demgen.tasks.regression import DEMRegressionTask

    precision_arg, channels_last, compiled = MODES[mode]
    precision = resolve_precision(precision_arg, device)
    dtype = autocast_dtype(precision)
    chip, batch_size = MODELS[model]
    chip = s.get("chip", chip)
    batch_size = s.get("batch", {}).get(model, batch_size)
    torch.manual_seed(0)
    if model == "unet":
        cfg = DemoConfig()
        bands = ["B2", "B3", "B4", "B8"]
        inorm, enorm = _norms(bands)
        arch = cfg.settings()["model"]
        task = DEMRegressionTask(
            inorm, enorm, base=cfg.base, depth=cfg.depth, stem=cfg.stem,
            max_width=int(arch.get("max_width", 256)), chip_size=chip,
        )  # fmt: skip
    else:
        bands = ["B4", "B3", "B2"]
        inorm, enorm = _norms(bands)
        task = Pix2PixTask(
            inorm, enorm, chip_size=chip, generator_kwargs=s.get("pix2pix_generator")
        )
    task.to(device).train()
    task.set_channels_last(channels_last)
    if compiled:
        task.model = torch.compile(task.model)
        if model == "pix2pix":
            task.discriminator = torch.compile(task.discriminator)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(batch_size, 1, chip, chip, generator=g) > 0.05
    target = torch.randn(batch_size, 1, chip, chip, generator=g).clamp(-1, 1) * mask
    image = torch.randn(batch_size, len(bands), chip, chip, generator=g)
    batch = {"image": image, "target": target, "mask": mask}
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batch = {k: v.to(device).contiguous(memory_format=fmt) for k, v in batch.items()}
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def ctx():
        return torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    if model == "pix2pix":
        opt_g, opt_d = task.configure_optimizers()[0]

        def step() -> None:
            img, tgt, msk = batch["image"], batch["target"], batch["mask"]
            with ctx():
                fake = task.hide_invalid(task(img), tgt, msk)
                loss_d = task.discriminator_loss(img, tgt, fake)
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

    else:
        opt = task.configure_optimizers()["optimizer"]

        def step() -> None:
            with ctx():
                loss = task.compute_loss(task(batch["image"]), batch["target"], batch["mask"])
            opt.zero_grad(set_to_none=True)
            loss["loss"].backward()
            opt.step()

    info = {"precision": precision, "channels_last": channels_last, "compile": compiled,
            "chip": chip, "batch": batch_size, "bands": len(bands)}  # fmt: skip
    return step, info


def measure_train(model: str, mode: str, device: str, s: dict, count_flops: bool) -> dict:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step, info = build_step(model, mode, device, s)
    step()  # the first step: lazy init, cuDNN heuristics and, compiled, the compilation
    _sync(device)
    first_s = time.perf_counter() - t0
    for _ in range(s["warmup"]):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(s["steps"]):
        step()
    _sync(device)
    sec = (time.perf_counter() - t0) / s["steps"]
    out = {**info, "first_step_s": round(first_s, 2), "warmup_steps": s["warmup"],
           "timed_steps": s["steps"], "step_ms": round(sec * 1e3, 3),
           "samples_per_s": round(info["batch"] / sec, 2)}  # fmt: skip
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        out["flops_per_step"] = int(counter.get_total_flops())
    if device.startswith("cuda"):
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def child_train(s: dict, device: str, model: str, modes: list[str]) -> dict:
    out = {}
    for mode in modes:
        try:
            out[mode] = measure_train(model, mode, device, s, count_flops=mode == "fp32_nchw")
        except Exception as exc:  # noqa: BLE001 - reported, the other modes still run
            what = "torch.compile failed" if MODES[mode][2] else "failed"
            out[mode] = {"skipped": f"{what}: {type(exc).__name__}: {first_line(exc)}"}
    return out


def child_predict(s: dict, device: str) -> dict:
    sys.path.insert(0, str(HERE))
    from predict_bench import make_checkpoint, make_image

    from demgen.inference.scene import predict_scene
    from demgen.precision import resolve_precision
    from demgen.tasks.registry import load_task

    n = s["predict_size"]
    out: dict = {"size": n, "megapixels": round(n * n / 1e6, 3), "overlap": 0.25,
                 "window": "default (twice the chip)", "batch_size": 4}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_image(tmp / "image.tif", n)
        make_image(tmp / "warm.tif", min(n, 512))
        make_checkpoint(tmp / "model.ckpt")
        out["inputs_s"] = round(time.perf_counter() - t0, 1)
        task = load_task(tmp / "model.ckpt")
        for precision in ("auto", "32"):
            kw = {"precision": precision, "device": device, "progress": False}
            predict_scene(task, tmp / "warm.tif", tmp / f"warm_{precision}.tif", **kw)
            _sync(device)
            t0 = time.perf_counter()
            predict_scene(task, tmp / "image.tif", tmp / f"pred_{precision}.tif", **kw)
            _sync(device)
            sec = time.perf_counter() - t0
            out[precision] = {"lightning_precision": resolve_precision(precision, device),
                              "predict_s": round(sec, 3),
                              "mpx_per_s": round(n * n / 1e6 / sec, 2)}  # fmt: skip
    out["auto_vs_fp32"] = round(out["auto"]["mpx_per_s"] / out["32"]["mpx_per_s"], 2)
    return out


def child_mae(s: dict, device: str) -> dict:
    """Train configs/quick.yaml for the same N steps in fp32 and bf16, same seed and world;
    score each run's last.ckpt on the test split (as `demgen test`)."""
    import logging

    from demgen.scoring import score_checkpoint
    from demgen.tasks.registry import load_task
    from demgen.training import fit

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    steps = s["mae_steps"]
    out: dict = {"config": "configs/quick.yaml", "steps": steps, "seed": 0,
                 "checkpoint": "last.ckpt", "split": "test"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for precision in ("32", "bf16"):
            args = [
                "--config", str(REPO / "configs" / "quick.yaml"),
                "--run_root", str(tmp / "runs"), "--run_name", f"p{precision}",
                "--data.init_args.cache_dir", str(tmp / "data"), "--seed_everything", "0",
                "--precision", precision, "--trainer.max_steps", str(steps),
                "--trainer.max_epochs", "100000", "--early_stopping.patience", "100000",
                "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false",
                "--trainer.accelerator", "cuda" if device.startswith("cuda") else "cpu",
            ]  # fmt: skip
            for key, value in s.get("mae_world", {}).items():
                args += [f"--data.init_args.{key}", str(value)]
            t0 = time.perf_counter()
            run_dir = fit(args, log=None)
            fit_s = time.perf_counter() - t0
            if run_dir is None:
                raise RuntimeError("demgen fit wrote no run folder")
            stores = sorted((tmp / "data").glob("synth_*/store"))
            if len(stores) != 1:
                raise RuntimeError(f"expected one chip store, found {stores}")
            task = load_task(run_dir / "checkpoints" / "last.ckpt")
            res = score_checkpoint(task, stores[0], split="test", precision=precision,
                                   device=device, progress=False)  # fmt: skip
            methods = res["methods"]
            out["fp32" if precision == "32" else "bf16"] = {
                "fit_s_with_data": round(fit_s, 1),
                "test_chips": res["chips"],
                "mae_m": round(methods["model"]["mae_m"], 3),
                "rmse_m": round(methods["model"]["rmse_m"], 3),
                "baselines_mae_m": {k: round(v["mae_m"], 3)
                                    for k, v in methods.items() if k != "model"},
            }  # fmt: skip
    a, b = out["bf16"]["mae_m"], out["fp32"]["mae_m"]
    out["bf16_vs_fp32_relative"] = round((a - b) / b, 4) if b else None
    return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:300]


def child_main(name: str, payload: str) -> None:
    args = json.loads(payload)
    s, device = args["settings"], args["device"]
    if name == "train":
        out = child_train(s, device, args["model"], args["modes"])
    elif name == "predict":
        out = child_predict(s, device)
    elif name == "mae":
        out = child_mae(s, device)
    else:
        raise SystemExit(f"unknown child {name}")
    print(MARK + json.dumps(out), flush=True)


# -- the parent: device info, budget, children, summary --------------------------------------


def device_info(quick_n: int, smoke: bool) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
            "python": platform.python_version(), "host": platform.node(),
            "cpu_threads": torch.get_num_threads()}  # fmt: skip
    if not torch.cuda.is_available():
        info.update(cuda=False, skipped=NO_CUDA)
        if smoke:
            info["smoke_cpu"] = "the measurements below ran on the CPU at tiny sizes"
        return info
    from demgen.precision import gpu_has_native_bf16, precision_reason, resolve_precision

    props = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    cap = torch.cuda.get_device_capability(0)
    info.update(
        cuda=True, name=name, capability=f"{cap[0]}.{cap[1]}",
        native_bf16=gpu_has_native_bf16("cuda:0"),
        bf16_supported=bool(torch.cuda.is_bf16_supported()),
        memory_gib=round(props.total_memory / 2**30, 1),
        multiprocessors=props.multi_processor_count,
        auto_precision=resolve_precision("auto", "cuda"), auto_reason=precision_reason("cuda"),
        peak=peak_for(name),
        tf32={"cudnn": torch.backends.cudnn.allow_tf32,
              "matmul": torch.backends.cuda.matmul.allow_tf32},
        cudnn_benchmark=torch.backends.cudnn.benchmark,
    )  # fmt: skip
    try:  # a measured bf16 matmul rate, the practical ceiling
        n = quick_n
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        reps = 10
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / reps
        info["matmul_bf16"] = {"n": n, "tflops": round(2 * n**3 / sec / 1e12, 1)}
        del a, b
        torch.cuda.empty_cache()
    except Exception as exc:  # noqa: BLE001
        info["matmul_bf16"] = {"skipped": f"{type(exc).__name__}: {first_line(exc)}"}
    return info


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def run_child(name: str, payload: dict, cap_s: float, budget: Budget) -> dict:
    """Run one child; its JSON, or ``{"skipped": why}``."""
    limit = min(cap_s, budget.left() - 5)
    if limit < 15:
        return {"skipped": f"time budget spent ({budget.left():.0f} s left)"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(payload)]
    src = str(REPO / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {limit:.0f} s"}
    wall = round(time.perf_counter() - t0, 1)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            out = json.loads(line[len(MARK) :])
            out["child_wall_s"] = wall
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"skipped": f"child failed (exit {proc.returncode}): {tail[0][:300]}"}


def summarize(train: dict, peak: float | None, matmul: float | None) -> tuple[list[dict], dict]:
    rows, verdict = [], {}
    for model, modes in train.items():
        if "skipped" in modes:
            continue
        base = modes.get("fp32_nchw", {})
        flops = base.get("flops_per_step")
        best = None
        for mode, m in modes.items():
            if mode == "child_wall_s" or "samples_per_s" not in m:
                continue
            tflops = flops / (m["step_ms"] / 1e3) / 1e12 if flops else None
            ratio = m["samples_per_s"] / base["samples_per_s"] if "samples_per_s" in base else None
            m["vs_fp32_nchw"] = round(ratio, 2) if ratio else None
            m["tflops"] = round(tflops, 2) if tflops else None
            m["pct_bf16_peak"] = round(100 * tflops / peak, 2) if tflops and peak else None
            m["pct_matmul_bf16"] = round(100 * tflops / matmul, 2) if tflops and matmul else None
            keys = ("precision", "samples_per_s", "vs_fp32_nchw", "tflops", "pct_bf16_peak")
            rows.append({"model": model, "mode": mode, **{k: m[k] for k in keys}})
            if mode != "fp32_nchw" and ratio and (best is None or ratio > best[1]):
                best = (mode, ratio)
        if best:
            verdict[model] = {"best_mode": best[0], "vs_fp32_nchw": round(best[1], 2),
                              "target": TARGET_RATIO, "met": best[1] >= TARGET_RATIO}  # fmt: skip
    return rows, verdict


def table_md(rows: list[dict]) -> str:
    head = "| model | mode | precision | samples/s | vs fp32 NCHW | TFLOP/s | % bf16 peak |"
    lines = [head, "|" + " --- |" * 7]

    def f(v):
        return "n/a" if v is None else f"{v:g}"

    for r in rows:
        cells = [r["model"], r["mode"], r["precision"]]
        cells += [f(r[k]) for k in ("samples_per_s", "vs_fp32_nchw", "tflops", "pct_bf16_peak")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "gpu_check.json", help="JSON output")
    ap.add_argument("--quick", action="store_true", help="fewer steps, a 1024-px scene")
    ap.add_argument(
        "--smoke-cpu",
        action="store_true",
        help="without CUDA, run every measurement on the CPU at tiny sizes",
    )
    ap.add_argument("--budget-s", type=float, default=270.0, help="overall time budget (270)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile mode")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(*args.child)
        return 0
    t_start = time.perf_counter()
    budget = Budget(args.budget_s)
    sys.path.insert(0, str(REPO / "src"))
    s = dict(QUICK if args.quick else FULL)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and args.smoke_cpu:
        s.update(SMOKE)
    info = device_info(s["matmul_n"], args.smoke_cpu)
    result: dict = {
        "script": "benchmarks/gpu_check.py", "quick": args.quick, "smoke_cpu": args.smoke_cpu,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": s, "device": info,
        "target": f"demgen's training step at least {TARGET_RATIO:g}x the fp32 NCHW one",
    }  # fmt: skip
    print(f"[gpu_check] {info.get('name', NO_CUDA)} (torch {info['torch']})", flush=True)
    if not cuda and not args.smoke_cpu:
        for section in ("train", "predict", "mae", "summary"):
            result[section] = {"skipped": NO_CUDA}
    else:
        device = "cuda" if cuda else "cpu"
        payload = {"settings": s, "device": device}
        train: dict = {}
        for model in MODELS:  # (a) and (b) first: the comparison the target is about
            job = {**payload, "model": model, "modes": ["fp32_nchw", "auto"]}
            train[model] = run_child("train", job, TIMEOUTS["train"], budget)
            print(f"[gpu_check] train {model}: {json.dumps(train[model])}", flush=True)
        result["train"] = train
        result["predict"] = run_child("predict", payload, TIMEOUTS["predict"], budget)
        print(f"[gpu_check] predict: {json.dumps(result['predict'])}", flush=True)
        result["mae"] = run_child("mae", payload, TIMEOUTS["mae"], budget)
        print(f"[gpu_check] mae: {json.dumps(result['mae'])}", flush=True)
        for model in MODELS:  # (c) last: compiling is the slowest and the most fragile
            if args.no_compile or not cuda:
                why = "--no-compile" if args.no_compile else "not tried on the CPU smoke"
                c = {"skipped": why}
            else:
                c = run_child("train", {**payload, "model": model, "modes": ["auto_compile"]},
                              TIMEOUTS["compile"], budget)  # fmt: skip
                c = c.get("auto_compile", c)
            if "skipped" not in train[model]:
                train[model]["auto_compile"] = c
            print(f"[gpu_check] compile {model}: {json.dumps(c)}", flush=True)
        peak = (info.get("peak") or {}).get("bf16_dense_tflops")
        matmul = (info.get("matmul_bf16") or {}).get("tflops")
        rows, verdict = summarize(train, peak, matmul)
        result["summary"] = {"rows": rows, "target_10x": verdict, "table_md": table_md(rows)}
        print(result["summary"]["table_md"], flush=True)
        print(f"[gpu_check] target: {json.dumps(verdict)}", flush=True)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".part")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"[gpu_check] wrote {args.out} ({result['wall_s']} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
