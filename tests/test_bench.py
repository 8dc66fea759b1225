"""benchmarks/bench.py is bounded on every CPU: items projected over the budget (from a quick
matmul probe) and children that time out are reported as "skipped: reason", exit code 0.
No real benchmark item runs here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


class _Done:
    """A finished child process as subprocess.run returns it."""

    def __init__(self, result: dict) -> None:
        self.returncode, self.stderr = 0, ""
        self.stdout = json.dumps(result) + "\n"


#: the 2-core AVX2 CPU without native bf16 where `make bench` used to crash (measured)
SLOW_BF16 = {"bf16": 1.0, "fp32": 142.0}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("demgen_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_projection_skips_emulated_bf16_and_keeps_fp32(bench):
    reason = bench.skip_reason("matmul_bf16", SLOW_BF16, 300)
    assert reason and "bf16 runs at 1.0 GFLOP/s" in reason and "300 s budget" in reason
    assert bench.skip_reason("pix2pix_bf16", SLOW_BF16, 300)
    assert bench.skip_reason("predict_bf16", SLOW_BF16, 300)
    for name in ("matmul_fp32", "pix2pix_fp32", "regression_fp32", "predict_32", "loader_0"):
        assert bench.skip_reason(name, SLOW_BF16, 300) is None, name
    # a CPU with fast bf16 runs everything (the AMX machine of results.json)
    fast = {"bf16": 163.0, "fp32": 317.0}
    assert all(bench.skip_reason(n, fast, 300) is None for n in bench.ALL)
    assert bench.child_timeout("pix2pix_fp32", SLOW_BF16) >= bench.MIN_TIMEOUT_S


def test_probe_is_quick_and_measures_both_dtypes(bench):
    rates = bench.probe_rates(n=128, repeats=1)
    assert set(rates) == {"bf16", "fp32"} and all(v > 0 for v in rates.values())


def test_run_with_a_slow_probe_and_a_child_timeout_completes(bench, tmp_path, monkeypatch, capsys):
    """The crash: matmul_bf16's child ran into the 400 s timeout and the traceback ended the
    run. Now it is not even started (projected ~900 s), a child that does time out is a
    skipped entry, and the run finishes with exit code 0, table and JSON written."""
    started = []

    def fake_child(argv, timeout=400):
        started.append(argv)
        if argv[0] == "train":
            raise subprocess.TimeoutExpired(argv, timeout)
        return {"gflops": 140.0, "best_s": 0.97, "repeats": 3, "peak_rss_mb": 400.0}

    def fake_run(cmd, **kwargs):  # subprocess.run raises TimeoutExpired past the timeout
        return _Done(fake_child(cmd[2:], kwargs["timeout"]))

    monkeypatch.setattr(bench, "probe_rates", lambda *a, **k: dict(SLOW_BF16))
    fake = SimpleNamespace(run=fake_run, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(bench, "subprocess", fake)  # bench's own module only
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    rc = bench.main(["--only", "matmul_bf16", "matmul_fp32", "regression_fp32",
                     "--out", str(out), "--md", str(md)])  # fmt: skip
    assert rc == 0
    assert [a[0] for a in started] == ["matmul", "train"]  # bf16 never started
    r = json.loads(out.read_text())
    assert r["matmul_bf16"]["skipped"].startswith("projected")
    limit = bench.child_timeout("regression_fp32", SLOW_BF16)
    assert r["regression_fp32"] == {"skipped": f"timed out after {limit:.3g} s"}
    assert r["matmul_fp32"]["gflops"] == 140.0 and r["machine"]["probe_gflops"] == SLOW_BF16
    text = md.read_text()
    assert "| matmul_bf16 | - | skipped: projected" in text
    assert "| regression_fp32 | - | skipped: timed out after" in text
    assert "Traceback" not in capsys.readouterr().err


def test_a_real_child_past_its_timeout_is_skipped(bench):
    """A real item child (it cannot even import torch in 0.3 s) is killed and reported."""
    assert bench.run_item("matmul_fp32", ["matmul", "fp32"], 0.3) == {
        "skipped": "timed out after 0.3 s"
    }


def test_a_failing_child_is_reported_and_fails_the_run(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "probe_rates", lambda *a, **k: dict(SLOW_BF16))
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    monkeypatch.setattr(bench, "ITEMS_SCRIPT", tmp_path / "no_such_script.py")
    rc = bench.main(["--only", "matmul_fp32", "--out", str(out), "--md", str(md)])
    assert rc == 1
    assert json.loads(out.read_text())["matmul_fp32"]["skipped"].startswith("failed: ")
