"""benchmarks/gpu_check.py and .sh on a machine without CUDA: every GPU part is skipped,
the script still ends and writes its JSON; the shell script is valid bash that never
installs an unpinned torch, and on the CPU path installs nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SHELL = REPO / "benchmarks" / "gpu_check.sh"
SECTIONS = ("train", "predict", "mae", "summary")

no_cuda = pytest.mark.skipif(
    torch.cuda.is_available() or shutil.which("nvidia-smi") is not None,
    reason="a GPU is here: gpu_check would measure it, not skip",
)


@no_cuda
def test_gpu_check_skips_every_gpu_part_without_cuda(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["device"]["cuda"] is False
    assert result["device"]["skipped"] == "no CUDA device"
    for section in SECTIONS:
        assert result[section] == {"skipped": "no CUDA device"}, section
    assert result["quick"] is True


def test_gpu_check_sh_is_valid_bash_and_pins_torch():
    subprocess.run(["bash", "-n", str(SHELL)], check=True)
    text = SHELL.read_text()
    assert "set -euo pipefail" in text
    installs = [
        line
        for line in text.splitlines()
        if not line.lstrip().startswith("#") and re.search(r"pip\b.*\binstall\b", line)
    ]
    assert installs, "the GPU path installs what it needs"
    for line in installs:  # torch only ever as the pinned build
        if re.search(r"(?<![\w-])torch(?![\w-])", line):
            assert re.search(r"(?<![\w-])torch==\d+\.\d+\.\d+", line), line
            assert "--index-url" in line, line


@no_cuda
def test_gpu_check_sh_cpu_path_installs_nothing(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "GPU_CHECK_PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(SHELL), "--quick"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "CPU path" in proc.stdout and "no install" in proc.stdout
    assert "installing" not in proc.stdout
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["train"] == {"skipped": "no CUDA device"}
