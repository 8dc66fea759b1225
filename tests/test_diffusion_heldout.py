"""The calibration arithmetic of benchmarks/diffusion_heldout.py: a calibrated sampler's
coverage with N samples, checked against a simulation of exactly that sampler."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "diffusion_heldout.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("diffusion_heldout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["diffusion_heldout"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("diffusion_heldout", None)


def test_calibrated_coverage_with_n_samples_matches_a_simulation(bench):
    """Truth and N samples drawn from one Gaussian per pixel (a calibrated model): the
    fraction of truths within mean +- k s (s: the samples' std, ddof 1) is the formula's,
    not the 68 / 95 % of an exactly known spread."""
    rng = np.random.default_rng(3)
    n, pixels = 8, 200_000
    centre = rng.normal(500.0, 100.0, pixels)
    spread = rng.uniform(2.0, 30.0, pixels)
    draws = centre + spread * rng.standard_normal((n, pixels))
    truth = centre + spread * rng.standard_normal(pixels)
    mean, std = draws.mean(axis=0), draws.std(axis=0, ddof=1)
    cal = bench.calibration(mean, std, draws[0], truth)
    assert cal["within_1_std"] == pytest.approx(bench.calibrated_fraction(1, n), abs=0.005)
    assert cal["within_2_std"] == pytest.approx(bench.calibrated_fraction(2, n), abs=0.005)
    assert bench.calibrated_fraction(1, n) == pytest.approx(0.623, abs=0.002)
    assert bench.calibrated_fraction(2, 1000) == pytest.approx(0.9545, abs=0.002)
    # the spread ranks the errors: larger spread, larger error
    q = cal["mae_by_std_quartile_m"]
    assert q == sorted(q) and q[3] > 2 * q[0]
    # one sample errs by sqrt(2) times the spread on average, the mean by sqrt(1 + 1/n)
    assert cal["mae_one_sample_m"] / cal["mae_mean_m"] == pytest.approx(
        np.sqrt(2 / (1 + 1 / n)), rel=0.02)  # fmt: skip
    # an overconfident sampler (half the spread) covers far less
    over = bench.calibration(mean, std / 2, draws[0], truth)
    assert over["within_1_std"] < 0.4
