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

Every item is bounded, so the run completes on any CPU: a probe first times small bf16 and
fp32 matmuls (under a second), each item's time is projected from its FLOPs at the probed
rate of its dtype, and an item projected over ``--budget`` seconds (default 300) is not run;
each child also has a timeout (a few times its projection). Such an item, and one whose child
fails, is reported as ``skipped: <reason>`` in the table and as ``{"skipped": reason}`` in the
JSON (on a 2-core AVX2 CPU without native bf16, where bf16 runs at about 1 GFLOP/s against
142 for fp32, every bf16 item is skipped). The exit code is 0 unless an item failed.

    python benchmarks/bench.py                 # everything, about 5 minutes on 2 cores
    python benchmarks/bench.py --only matmul_bf16 regression_auto
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
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_items import BATCH, CHIP, MODES, PREDICT_SIZE  # noqa: E402

from demgen.io.raster import write_text_atomic  # noqa: E402
from demgen.precision import cpu_flags, precision_reason, resolve_precision  # noqa: E402

HERE = Path(__file__).resolve().parent
ITEMS_SCRIPT = HERE / "bench_items.py"

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

# -- bounding every item ------------------------------------------------------------------------

#: FLOPs of the work each item does, from ``torch.utils.flop_counter`` (the ``flops_per_step``
#: and ``predict_flops`` of results.json; fixed by the architectures, not by the machine).
STEP_FLOPS = {"pix2pix": 689.1e9, "regression": 286.3e9}
PREDICT_FLOPS = 895.4e9
MATMUL_FLOPS = 2 * 4096**3
BUDGET_S = 300.0  # default: an item projected to take longer is skipped
STARTUP_S = 15.0  # interpreter, imports and set-up of one child
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 120.0, 900.0


def probe_rates(n: int = 512, repeats: int = 3, limit_s: float = 5.0) -> dict[str, float]:
    """GFLOP/s of an ``n`` x ``n`` matmul in bf16 and fp32 (best of ``repeats`` after a
    warm-up, stopping early once one dtype has used ``limit_s``): under a second on any CPU,
    it tells whether bf16 is native (about half to several times fp32) or emulated (1 %)."""
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        best, spent = float("inf"), 0.0
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            torch.mm(a, b)
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
            if spent > limit_s:
                break
        out[name] = 2 * n**3 / best / 1e9
    return out


def _dtype(precision_arg: str) -> str:
    """bf16 or fp32: what ``precision_arg`` (auto, 32, bf16) computes in on this CPU."""
    return "bf16" if resolve_precision(precision_arg, "cpu").startswith("bf16") else "fp32"


def projected_work(name: str) -> tuple[float, str]:
    """``(FLOPs, dtype)`` item ``name`` computes (0 FLOPs: no heavy arithmetic)."""
    if name.startswith("matmul_"):
        dtype = name.split("_")[1]
        return (1 + (6 if dtype == "bf16" else 3)) * MATMUL_FLOPS, dtype
    if name in TRAIN_ITEMS:
        task, mode, warmup, steps = TRAIN_ITEMS[name]
        return (warmup + steps + 1) * STEP_FLOPS[task], _dtype(MODES[mode][0])
    if name.startswith("predict_"):
        return PREDICT_FLOPS, _dtype(name.split("_")[1])
    if name == "profile":
        return 5 * STEP_FLOPS["regression"], _dtype("auto")
    return 0.0, "fp32"


def projected_seconds(name: str, rates: dict[str, float]) -> float:
    """A lower bound of item ``name``'s time here: its FLOPs at the probed matmul rate."""
    flops, dtype = projected_work(name)
    return STARTUP_S + flops / (max(rates.get(dtype, 0.0), 1e-3) * 1e9)


def skip_reason(name: str, rates: dict[str, float], budget: float) -> str | None:
    """Why item ``name`` is not run here (projected over ``budget`` s), or None to run it."""
    sec = projected_seconds(name, rates)
    if sec <= budget:
        return None
    _, dtype = projected_work(name)
    return (
        f"projected {sec:.0f} s (> {budget:.0f} s budget): {dtype} runs at "
        f"{rates[dtype]:.1f} GFLOP/s here (fp32 {rates['fp32']:.0f})"
    )


def child_timeout(name: str, rates: dict[str, float]) -> float:
    """Seconds item ``name``'s child may run: 4 x its projection, within fixed bounds."""
    return min(MAX_TIMEOUT_S, max(MIN_TIMEOUT_S, 4 * projected_seconds(name, rates)))


class Skipped(Exception):
    """An item did not produce a result; ``args[0]`` says why."""


def run_child(args: list[str], timeout: float = 400) -> dict:
    """Run one item in a fresh interpreter; it prints one JSON line last, with its peak RSS.
    Raises :class:`Skipped` when it times out or fails."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(ITEMS_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise Skipped(f"timed out after {timeout:.3g} s") from None
    if proc.returncode:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise Skipped(f"failed: {lines[-1].strip() if lines else f'exit {proc.returncode}'}")
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise Skipped("failed: the item printed no result") from None
    out["item_wall_s"] = time.perf_counter() - t0
    return out


def run_item(name: str, argv: list[str], timeout: float) -> dict:
    """``run_child`` for a named item: its result, or ``{"skipped": reason}``."""
    try:
        return run_child(argv, timeout=timeout)
    except Skipped as exc:
        return {"skipped": str(exc)}


def item_argv(name: str, folder: str) -> list[str]:
    """The child arguments of item ``name`` (see ``bench_items.child_main``)."""
    if name.startswith("matmul_"):
        return ["matmul", name.split("_")[1]]
    if name in TRAIN_ITEMS:
        return ["train", *map(str, TRAIN_ITEMS[name])]
    if name.startswith("predict_"):
        return ["predict", name.split("_")[1], folder]
    if name.startswith("loader_"):
        return ["loader", name.split("_")[1], folder]
    return ["profile"]


# -- report -----------------------------------------------------------------------------------


def _ok(r: dict, name: str) -> dict | None:
    """Item ``name``'s result, or None when it was skipped or not run."""
    v = r.get(name)
    return v if isinstance(v, dict) and "skipped" not in v else None


def pct(x: float | None, peak: float | None) -> str:
    return f"{100 * x / peak:.0f} %" if x and peak else "-"


def table(r: dict) -> str:
    peaks = {k: (_ok(r, f"matmul_{k}") or {}).get("gflops") for k in ("bf16", "fp32")}
    rows = [
        "| item | precision | throughput | GFLOP per step / scene | achieved GFLOP/s "
        "| % of bf16 peak | % of fp32 peak | peak RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in ("bf16", "fp32"):
        m = _ok(r, f"matmul_{k}")
        if m:
            rows.append(
                f"| matmul 4096 x 4096 (peak) | {k} | {m['best_s'] * 1e3:.0f} ms | "
                f"{2 * 4096**3 / 1e9:.0f} | {m['gflops']:.0f} | "
                f"{pct(m['gflops'], peaks['bf16'])} | "
                f"{pct(m['gflops'], peaks['fp32'])} | {m['peak_rss_mb']:.0f} MB |"
            )
    labels = {"pix2pix": "pix2pix train step (G + D)", "regression": "U-Net-256 regression step"}
    for name, (task, mode, *_) in TRAIN_ITEMS.items():
        t = _ok(r, name)
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
    fl = (_ok(r, "predict_flops") or {}).get("flops")
    for p in PREDICT_PRECISIONS:
        t = _ok(r, f"predict_{p}")
        if t:
            g = fl / t["predict_s"] / 1e9 if fl else None
            rows.append(
                f"| predict 4096 x 4096, 25 % overlap | {p} | {t['mpx_per_s']:.2f} Mpx/s "
                f"({t['predict_s']:.1f} s) | {fl / 1e9 if fl else 0:.0f} | "
                f"{g or 0:.0f} | {pct(g, peaks['bf16'])} | {pct(g, peaks['fp32'])} | "
                f"{t['child_peak_rss_mb']:.0f} MB |"
            )
    for w in (0, 2):
        t = _ok(r, f"loader_{w}")
        if t:
            rows.append(
                f"| train loader (augmenting), {w} workers | - | "
                f"{t['chips_per_s']:.0f} chips/s | - | - | - | - | "
                f"{t['peak_rss_mb']:.0f} MB |"
            )
    for name in ALL:
        v = r.get(name)
        if isinstance(v, dict) and "skipped" in v:
            rows.append(f"| {name} | - | skipped: {v['skipped']} | - | - | - | - | - |")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the items (all, or ``--only``), write results.json and results.md, print the
    table; 0 unless an item failed (skipped items do not count as failures)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=ALL, help="run only these items")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--md", type=Path, default=HERE / "results.md")
    ap.add_argument(
        "--budget",
        type=float,
        default=BUDGET_S,
        help=f"skip an item projected to take longer than this many seconds ({BUDGET_S:.0f})",
    )
    args = ap.parse_args(argv)
    items = args.only or ALL
    t_start = time.perf_counter()
    rates = probe_rates()
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
            "probe_gflops": rates,
            "budget_s": args.budget,
        }
    }
    print(f"probe: bf16 {rates['bf16']:.1f}, fp32 {rates['fp32']:.1f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        inputs_missing = None
        if any(i.startswith(("predict", "loader")) for i in items):
            results["make_inputs"] = run_item("make_inputs", ["make_inputs", tmp], MAX_TIMEOUT_S)
            inputs_missing = results["make_inputs"].get("skipped")
            if not inputs_missing:
                print(f"inputs ready in {results['make_inputs']['seconds']:.0f} s", flush=True)
        if any(i.startswith("predict") for i in items):
            results["predict_flops"] = run_item("predict_flops", ["predict_flops"], MIN_TIMEOUT_S)
        for name in items:
            reason = skip_reason(name, rates, args.budget)
            if reason is None and inputs_missing and name.startswith(("predict", "loader")):
                reason = f"no inputs ({inputs_missing})"
            if reason is not None:
                results[name] = {"skipped": reason}
            else:
                timeout = child_timeout(name, rates)
                results[name] = run_item(name, item_argv(name, tmp), timeout)
            r = results[name]
            done = (
                f"skipped: {r['skipped']}"
                if "skipped" in r
                else f"done in {r['item_wall_s']:.0f} s"
            )
            print(f"{name}: {done}", flush=True)
    results["total_wall_s"] = time.perf_counter() - t_start
    write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")
    md = [
        f"Measured by `python benchmarks/bench.py` ({results['machine']['cores']} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH}, "
        f"{CHIP} x {CHIP} chips; total {results['total_wall_s']:.0f} s; CPU bf16 flags: "
        f"{', '.join(results['machine']['cpu_bf16_flags']) or 'none'}; auto = "
        f"{results['machine']['auto_precision']}; probe bf16 {rates['bf16']:.1f}, fp32 "
        f"{rates['fp32']:.1f} GFLOP/s, budget {args.budget:.0f} s per item). The U-Net-256 is "
        "the pix2pix generator `Pix2PixUNet(3, 1)` (54.4 M parameters); the regression step "
        "uses it with an unbounded head and masked L1. Prediction uses the demo's U-Net "
        f"(base 32, depth 4, stem 4) with 512-px windows on a {PREDICT_SIZE} x {PREDICT_SIZE} "
        "scene, BatchNorm folded into the convs.",
        "",
        table(results),
    ]
    if _ok(results, "profile"):
        md += ["", profile_table(results["profile"])]
    text = "\n".join(md) + "\n"
    if args.md.exists():  # keep a hand-written analysis below the marker
        old = args.md.read_text()
        marker = "<!-- analysis -->"
        if marker in old:
            text += "\n" + old[old.index(marker) :]
    write_text_atomic(args.md, text)
    print(text)
    failed = [n for n in items if results[n].get("skipped", "").startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
