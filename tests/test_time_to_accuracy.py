"""benchmarks/time_to_accuracy.py end to end on a tiny world (2 scenes of 256 px, held-out
scenes of 3 reliefs) with budgets of about a second: every recipe kind trains (the demo
U-Net, the time-cosine schedule, the pix2pix GAN), is scored on the held-out store, lands in
the JSON and the plot, and a second call resumes instead of training again. The schedule and
the summary are also checked on their own."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"


@pytest.fixture(scope="module")
def tta():
    # registered under its name: the runs' configs name its callbacks by class path
    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["time_to_accuracy"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("time_to_accuracy", None)


def test_time_cosine_schedule_warms_up_then_anneals(tta):
    cb = tta.TimeCosineLR(seconds=100, warmup=0.1, floor=0.01, warmup_start=0.1)
    assert cb.scale(0.0) == pytest.approx(0.1)
    assert cb.scale(0.1) == pytest.approx(1.0)
    assert cb.scale(0.55) == pytest.approx(0.505)
    assert cb.scale(1.0) == pytest.approx(0.01) and cb.scale(2.0) == pytest.approx(0.01)
    values = [cb.scale(f / 100) for f in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def _entry(mae: float) -> dict:
    return {"epochs": 1, "held_out": dict.fromkeys(("mae_m", "rmse_m", "nmad_m",
                                                    "slope_rmse_deg"), mae)}  # fmt: skip


def test_summary_ratio_and_time_to_accuracy(tta):
    res = {"runs": {
        "sat2dem_pix2pix": {"2": _entry(40.0), "5": _entry(30.0), "30": _entry(20.0)},
        "demgen_default": {"2": _entry(8.0), "5": _entry(6.0), "30": _entry(4.0)},
    }}  # fmt: skip
    s = tta.summarize(res)
    assert s["ratio_pix2pix_over_default_mae"] == {"2": 5.0, "5": 5.0, "30": 5.0}
    assert s["quarter_at_every_budget"] is True
    t = s["time_to_accuracy"]
    assert t["demgen_default_first_budget_min"] == 2.0 and t["speedup"] == 15.0
    assert t["target_10x_met"] is True
    res["runs"]["demgen_default"]["2"] = _entry(25.0)
    s = tta.summarize(res)
    assert s["time_to_accuracy"]["demgen_default_first_budget_min"] == 5.0
    assert s["time_to_accuracy"]["target_10x_met"] is False
    assert s["quarter_at_every_budget"] is False
    assert "| demgen_default | 5 |" in tta.table(res)


def test_tiny_run_writes_json_and_plot_and_resumes(tta, tmp_path, one_thread, capsys):
    out, png = tmp_path / "tta.json", tmp_path / "tta.png"
    argv = ["--budgets", "0.005,0.01", "--shaped-budgets", "0.01", "--scenes", "2", "--size",
            "256", "--recipes",
            "demgen_default,demgen_best,sat2dem_pix2pix", "--work", str(tmp_path / "work"),
            "--out", str(out), "--plot", str(png)]  # fmt: skip
    res = tta.main(argv)
    assert png.is_file() and png.stat().st_size > 0
    stored = json.loads(out.read_text())
    assert set(stored["runs"]) == {"demgen_default", "demgen_best", "sat2dem_pix2pix"}
    for name, runs in stored["runs"].items():
        assert runs["0.01"]["epochs"] >= 1, name  # the stop validates
        for e in runs.values():  # an early mark may come before the first validation
            assert e["train_batches"] >= 1, name
            h = e["held_out"]
            assert all(h[k] is not None and h[k] >= 0 for k in
                       ("mae_m", "rmse_m", "nmad_m", "slope_rmse_deg")), name  # fmt: skip
            assert e["settings"]["seed"] == 1
    # the budget-free schedules: one run to 0.01 min, a checkpoint kept at each mark
    for name in ("demgen_default", "sat2dem_pix2pix"):
        early, late = stored["runs"][name]["0.005"], stored["runs"][name]["0.01"]
        assert early["run"] == late["run"] and late["run"].endswith("_marks/version_0")
        assert early["how"] == "checkpoint at 0.005 min of one 0.01-min run"
        assert early["train_batches"] <= late["train_batches"]
        assert early["train_seconds"] <= late["train_seconds"]
    assert set(stored["runs"]["demgen_best"]) == {"0.01"}  # budget-shaped: its own run
    assert stored["runs"]["demgen_best"]["0.01"]["how"] == "its own run"
    assert set(stored["baselines"]) == {"training_mean", "linear_bands"}
    w = stored["world"]
    assert (
        w["stores"]["chip128"]["train_scene_seeds"] == w["stores"]["chip256"]["train_scene_seeds"]
    )
    assert w["held_out"]["chips"] == 8  # 4 held-out 256-px scenes per relief (hills, plains)
    assert "amx_bf16" in stored["machine"] and stored["machine"]["precision_auto"]
    assert set(stored["summary"]["ratio_pix2pix_over_default_mae"]) == {"0.005", "0.01"}
    # the time-cosine recipe got its callback, the others only the passive counter
    best_cfg = (tmp_path / "work" / "configs" / "demgen_best_0.01min.yaml").read_text()
    assert "TimeCosineLR" in best_cfg
    plain = (tmp_path / "work" / "configs" / "demgen_default_0.01min_marks.yaml").read_text()
    assert "TimeCosineLR" not in plain and "BudgetMarks" in plain
    # resumed: nothing trains again
    capsys.readouterr()
    again = tta.main(argv)
    assert capsys.readouterr().out.count("skipped") == 5
    assert again["runs"] == res["runs"]
    # the kept checkpoints score again, with every metric the scorer has now
    stored["runs"]["demgen_default"]["0.005"]["held_out"].pop("mae_chip_level_free_m")
    out.write_text(json.dumps(stored))
    rescored = tta.main([*argv, "--report", "--rescore"])
    for runs in rescored["runs"].values():
        for e in runs.values():
            h = e["held_out"]
            assert 0 <= h["mae_chip_level_free_m"] <= h["mae_m"] + 1e-6
    assert rescored["runs"]["demgen_default"]["0.01"]["held_out"] == \
        res["runs"]["demgen_default"]["0.01"]["held_out"]  # fmt: skip
