"""demgen export: every task class (regression, pix2pix, drpan, refine) exports to TorchScript
and ONNX; the exported graph reproduces the checkpoint's own network on a random normalized
input; the sidecar names every input channel in order with its normalization."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from demgen.cli import main as cli_main
from demgen.data.normalize import ElevationNorm, ImageNorm, ResidualNorm
from demgen.tasks.drpan import DRPANTask
from demgen.tasks.pix2pix import Pix2PixTask
from demgen.tasks.refine import RefineTask
from demgen.tasks.regression import DEMRegressionTask

BANDS = ["B2", "B3", "B4", "B8"]
INORM = ImageNorm(BANDS, 1e-4, [0.1] * 4, [0.05] * 4).to_dict()
ENORM = ElevationNorm(100.0, 900.0).to_dict()
TINY_G = {"base": 8, "depth": 5, "dropout": 0.0}  # pix2pix U-Net, 32 px
TINY_D = {"base": 8, "n_layers": 2}
EXTRAS = [
    {"name": "initial_dsm", "layer": "initial_dsm", "kind": "height"},
    *({"name": f"ortho2_{b}", "layer": "ortho2", "kind": "value"} for b in BANDS),
    {"name": "triangulation_error", "layer": "triangulation_error", "kind": "value"},
]
INPUT_NORMS = {
    "initial_dsm": {"strategy": "residual"},
    "ortho1": {"strategy": "image"},
    "ortho2": {"strategy": "image"},
    "triangulation_error": {"strategy": "zscore", "mean": [1.0], "std": [0.5]},
    "nodata_mask": {"strategy": "mask"},
}
REFINE_CHANNELS = [
    "initial_dsm",
    *(f"ortho1_{b}" for b in BANDS),
    *(f"ortho2_{b}" for b in BANDS),
    "triangulation_error",
    "nodata_mask",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def _tasks() -> dict[str, L.LightningModule]:
    return {
        "regression": lambda: DEMRegressionTask(INORM, ENORM, base=8, depth=2, chip_size=32),
        "pix2pix": lambda: Pix2PixTask(INORM, ENORM, generator_kwargs=TINY_G,
                                       discriminator_kwargs=TINY_D, chip_size=32),
        "drpan": lambda: DRPANTask(INORM, ENORM, generator_kwargs=TINY_G,
                                   discriminator_kwargs=TINY_D, chip_size=32),
        "refine": lambda: RefineTask(INORM, ResidualNorm(3.0, 32).to_dict(), extras=EXTRAS,
                                     input_norms=INPUT_NORMS, generator_kwargs={"base": 8,
                                     "depth": 3}, chip_size=32),
    }  # fmt: skip


def _checkpoint(task: L.LightningModule, path) -> None:
    """Save ``task`` as ``demgen fit`` would (a Trainer checkpoint), with non-trivial
    BatchNorm statistics so the folding in the export is exercised."""
    g = torch.Generator().manual_seed(0)
    for m in task.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, max_epochs=0)  # fmt: skip
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)


@pytest.mark.parametrize("kind", ["regression", "pix2pix", "drpan", "refine"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_every_task_exports_and_matches_its_checkpoint(kind, fmt, tmp_path, capsys):
    from demgen.tasks.registry import load_task

    ckpt = tmp_path / f"{kind}.ckpt"
    _checkpoint(_tasks()[kind](), ckpt)
    out = tmp_path / f"{kind}.{'pt' if fmt == 'torchscript' else 'onnx'}"
    args = ["export", str(ckpt), "--format", fmt, "-o", str(out)]
    assert cli_main(args) == 0, capsys.readouterr().err
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    task = load_task(ckpt).eval()
    names = [e["name"] for e in meta["inputs"]]
    assert names == (REFINE_CHANNELS if kind == "refine" else BANDS)
    for entry in meta["inputs"]:
        assert entry["normalization"] in meta["normalizations"]
    assert meta["normalizations"]["elevation_norm"] == task.elevation_norm.to_dict()
    if kind == "refine":
        assert meta["normalizations"]["triangulation_error"]["mean"] == [1.0]
        assert meta["normalizations"]["initial_dsm"]["gsf"] == 3.0 and meta["gsf"] == 3.0
        assert "gsf * output" in meta["output"]
    x = torch.randn(2, len(names), 32, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = task(x).float().numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(x).detach().numpy()
    else:
        import onnxruntime as ort

        got = ort.InferenceSession(str(out)).run(None, {"image": x.numpy()})[0]
    assert got.shape == expected.shape == (2, 1, 32, 64)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
