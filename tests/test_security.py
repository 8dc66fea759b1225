"""Checkpoints are data, not code: a .ckpt whose pickle runs a shell command is refused by
predict, export and fit --ckpt_path with one line and exit code 2, and its command never runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rasterio.transform import from_origin

from demgen.cli import main as cli_main
from demgen.errors import CheckpointError
from demgen.io.checkpoint import read_checkpoint
from demgen.io.raster import write_raster

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this calls os.system(command): what an attacker's checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "evil.ckpt"
    # a checkpoint-shaped dict whose hyper_parameters hide the payload
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Payload(f"touch {marker}")}}, ckpt)
    return ckpt, marker


def test_the_payload_is_real(evil):
    """The fixture would run its command under an unrestricted load (so the tests below
    check something that can happen)."""
    ckpt, marker = evil
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_read_checkpoint_refuses_without_running(evil):
    ckpt, marker = evil
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(ckpt)
    assert not marker.exists()


def _image(path: Path) -> Path:
    rng = np.random.default_rng(0)
    img = rng.integers(500, 3000, (4, 32, 32)).astype(np.uint16)
    return write_raster(path, img, crs="EPSG:32633", transform=from_origin(0, 320, 10, 10),
                        descriptions=["B2", "B3", "B4", "B8"])  # fmt: skip


def _one_line_exit_2(capsys, argv) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    return err


def test_predict_refuses(evil, tmp_path, capsys):
    ckpt, marker = evil
    img = _image(tmp_path / "img.tif")
    err = _one_line_exit_2(capsys, ["predict", str(ckpt), str(img), "-o", str(tmp_path / "o.tif")])
    assert "refused" in err
    assert not marker.exists() and not (tmp_path / "o.tif").exists()


def test_export_refuses(evil, tmp_path, capsys):
    ckpt, marker = evil
    err = _one_line_exit_2(capsys, ["export", str(ckpt), "-o", str(tmp_path / "m.pt")])
    assert "refused" in err
    assert not marker.exists() and not (tmp_path / "m.pt").exists()


def test_fit_resume_refuses(evil, tmp_path):
    ckpt, marker = evil
    argv = [
        sys.executable, "-m", "demgen", "fit", "--config", str(REPO / "configs" / "quick.yaml"),
        "--data.init_args.cache_dir", str(tmp_path / "world"), "--data.init_args.size", "64",
        "--data.init_args.n_scenes", "2", "--data.init_args.chip_size", "32",
        "--run_root", str(tmp_path / "runs"), "--ckpt_path", str(ckpt),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "refused" in err[-1] and "error" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert not marker.exists()
