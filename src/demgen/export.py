"""Export a checkpoint's generator to TorchScript or ONNX, its normalization alongside.

The exported graph maps a normalized image (B, bands, H, W) to normalized heights
(B, 1, H, W); ``<output>.json`` records the band names, both normalizations (with
their strategy names) and the size multiple, so any runtime can turn stored DNs
into metres exactly as ``demgen predict`` does. ONNX is the portable choice;
recent PyTorch releases deprecate TorchScript, which is kept for existing tooling.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from demgen.errors import InputError
from demgen.io.raster import atomic_path, write_text_atomic
from demgen.models.fusion import fuse_conv_bn
from demgen.tasks.regression import DEMRegressionTask

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def export_metadata(task: DEMRegressionTask, fmt: str) -> dict[str, Any]:
    """What a runtime needs besides the graph: bands, normalizations and input constraints."""
    return {
        "format": fmt,
        "input": "normalized image (B, bands, H, W), float32; H and W multiples of size_multiple",
        "output": "normalized heights (B, 1, H, W); metres = elevation_norm inverse",
        "bands": list(task.bands),
        "image_norm": task.image_norm.to_dict(),
        "elevation_norm": task.elevation_norm.to_dict(),
        "size_multiple": task.size_multiple,
        "target": task.hparams.target,
        "pixel_size_m": task.hparams.get("pixel_size"),
        "model_hparams": {k: v for k, v in task.hparams.items() if not k.endswith("_norm")},
    }


def export_model(task: DEMRegressionTask, output: str | Path, fmt: str = "torchscript") -> Path:
    """Write the generator as ``output`` (TorchScript ``.pt`` or ``.onnx``) plus ``output.json``."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    output = Path(output)
    model = (
        copy.deepcopy(task.model).float().eval().to("cpu", memory_format=torch.contiguous_format)
    )
    fuse_conv_bn(model)  # inference-only graph: BatchNorms folded into their convs
    size = task.hparams.chip_size - task.hparams.chip_size % task.size_multiple
    example = torch.zeros(1, len(task.bands), size, size)
    with warnings.catch_warnings(), atomic_path(output) as tmp:
        warnings.simplefilter("ignore")  # tracer warnings about the input-size check
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, example)
            traced.save(str(tmp))
        else:
            try:
                import onnx  # noqa: F401
            except ImportError as exc:
                raise InputError("ONNX export needs the 'onnx' package: pip install onnx") from exc
            torch.onnx.export(
                model, (example,), str(tmp), input_names=["image"], output_names=["height"],
                dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                              "height": {0: "batch", 2: "height", 3: "width"}},
                dynamo=False,
            )  # fmt: skip
    meta = export_metadata(task, fmt)
    write_text_atomic(output.with_name(output.name + ".json"), json.dumps(meta, indent=2) + "\n")
    return output
