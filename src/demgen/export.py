"""Export a checkpoint's network to TorchScript or ONNX, its contract and normalizations alongside.

The exported graph is the task's network alone: it maps the normalized, stacked input the
task builds from its named input layers (``task.encode``: (B, C, H, W)) to the network's
normalized output, for every task class. What the channels are, how each is normalized and
how the output turns into the declared output layers is the task's to say
(``task.export_description()``), so this module never looks at a task's name:

- image -> heights tasks (regression, pix2pix, drpan): C is the image bands, normalized
  with ``image_norm``; the output is normalized heights, ``elevation_norm`` turns them into
  metres (adding the chip offset for per-chip strategies);
- refinement (:class:`~demgen.tasks.refine.RefineTask`): C is the stacked input layers
  (initial DSM, image bands, nodata mask, extra layers); the output is a correction in GSF
  units, ``metres = initial DSM (holes filled) + gsf * output``.

``<output>.json`` holds the task's contract (``spec``: the named input layers with their
channels, bands and units, in the order their channels are stacked, and the output layers
with their units), every input channel in order (``inputs``: name, layer and the key of its
entry in ``normalizations``), every normalization with its parameters, the output's meaning
and the size multiple, so any runtime can prepare inputs and read outputs exactly as
``demgen predict`` does. ONNX is the portable choice; recent PyTorch releases deprecate
TorchScript, which is kept for existing tooling.
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

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def export_inputs(task: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The graph's input channels in order and the normalizations they name.

    Returns ``(inputs, normalizations)``: one ``{"name", "layer", "normalization"}`` per
    channel (``channel``: its index within a multi-band layer) and a dict of normalizations
    by key: ``image_norm`` and ``elevation_norm`` always, plus one per refinement input layer.
    """
    desc = task.export_description()
    inputs, norms = desc["inputs"], desc["normalizations"]
    if len(inputs) != task.in_channels:
        raise InputError(f"cannot describe the inputs of {type(task).__name__} for export")
    return inputs, norms


def export_metadata(task: Any, fmt: str) -> dict[str, Any]:
    """What a runtime needs besides the graph: the contract, inputs, normalizations, output."""
    desc = task.export_description()
    inputs, norms = export_inputs(task)
    spec = task.spec
    meta: dict[str, Any] = {
        "format": fmt,
        "task": getattr(task, "task_name", "") or task.hparams.get("task") or type(task).__name__,
        "spec": spec.to_dict(),
        "input": f"normalized inputs (B, {len(inputs)}, H, W), float32, channels as 'inputs'; "
        "H and W multiples of size_multiple",
        "output": desc["output"],
        "inputs": inputs,
        "normalizations": norms,
        "bands": list(task.bands),
        "image_norm": norms["image_norm"],
        "elevation_norm": norms["elevation_norm"],
        "size_multiple": spec.window_multiple,
        "target": task.hparams.get("target"),
        "pixel_size_m": task.hparams.get("pixel_size"),
        "vertical_crs": task.hparams.get("vertical_crs", "unknown"),
        "model_hparams": {
            k: v for k, v in task.hparams.items() if not k.endswith("_norm") and k != "input_norms"
        },
        **desc.get("extra", {}),
    }
    return meta


def export_model(task: Any, output: str | Path, fmt: str = "torchscript") -> Path:
    """Write the generator as ``output`` (TorchScript ``.pt`` or ``.onnx``) plus ``output.json``."""
    if task.spec.diffusion:
        raise InputError(
            "a diffusion checkpoint has no one-pass graph to export (it samples by iterating "
            "its denoiser); predict with demgen predict CKPT --samples N"
        )
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    output = Path(output)
    meta = export_metadata(task, fmt)  # before any file is written: fails on odd tasks
    model = (
        copy.deepcopy(task.model).float().eval().to("cpu", memory_format=torch.contiguous_format)
    )
    fuse_conv_bn(model)  # inference-only graph: BatchNorms folded into their convs
    multiple = meta["size_multiple"]
    size = max(multiple, task.hparams.chip_size - task.hparams.chip_size % multiple)
    example = torch.zeros(1, len(meta["inputs"]), size, size)
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
    write_text_atomic(output.with_name(output.name + ".json"), json.dumps(meta, indent=2) + "\n")
    return output
