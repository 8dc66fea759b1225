"""Export a checkpoint's generator to TorchScript or ONNX, its inputs and normalizations alongside.

The exported graph is the task's network alone: it maps its normalized, stacked input
(B, C, H, W) to its normalized output (B, 1, H, W), for every task class:

- image -> heights tasks (regression, pix2pix, drpan): C is the image bands, normalized
  with ``image_norm``; the output is normalized heights, ``elevation_norm`` turns them into
  metres (adding the chip offset for per-chip strategies);
- refinement (:class:`~demgen.tasks.refine.RefineTask`): C is the stacked input layers
  (initial DSM, image bands, nodata mask, extra layers, as ``RefineTask.stack_inputs``
  builds them); the output is a correction in GSF units, ``metres = initial DSM (holes
  filled) + gsf * output``.

``<output>.json`` lists every input channel in order (``inputs``: name, layer and the key of
its entry in ``normalizations``), every normalization with its parameters, the output's
meaning and the size multiple, so any runtime can prepare inputs and read outputs exactly as
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
from demgen.tasks.common import DEMTask

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}

_REFINE_NORMS = {
    "residual": "(h - m) / gsf, m the mean of the initial DSM's valid pixels in the window; "
    "holes filled from surrounding block means before normalizing",
    "relative": "(h - m) / gsf, m as for the initial DSM; 0 where invalid",
    "image": "as image_norm; 0 where invalid",
    "mask": "1 where the initial DSM has no value, else 0",
    "zscore": "(v - mean[channel]) / std[channel]; 0 where invalid",
}


def _is_refine(task: DEMTask) -> bool:
    return hasattr(task, "stack_inputs") and hasattr(task, "plan")


def export_inputs(task: DEMTask) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The graph's input channels in order and the normalizations they name.

    Returns ``(inputs, normalizations)``: one ``{"name", "layer", "normalization"}`` per
    channel (``channel``: its index within a multi-band layer) and a dict of normalizations
    by key: ``image_norm`` and ``elevation_norm`` always, plus one per refinement input layer.
    """
    norms: dict[str, dict[str, Any]] = {
        "image_norm": task.image_norm.to_dict(),
        "elevation_norm": task.elevation_norm.to_dict(),
    }
    if not _is_refine(task):
        inputs = [{"name": b, "layer": "image", "normalization": "image_norm"} for b in task.bands]
        return inputs, norms
    from demgen.tasks.refine import NODATA_MASK, ORTHO1

    inputs = []
    for name, strategy, ch in task.plan:
        norm = dict(task.hparams.input_norms[name])
        norm["formula"] = _REFINE_NORMS.get(strategy, strategy)
        if strategy in ("residual", "relative"):
            norm["gsf"] = task.gsf
        if strategy == "image":
            norm["image_norm"] = "image_norm"
        norms[name] = norm
        if name == ORTHO1:
            names = [f"{ORTHO1}_{b}" for b in task.bands]
        elif name == NODATA_MASK:
            names = [NODATA_MASK]
        else:
            names = [task.extras[c]["name"] for c in ch]
        for i, n in enumerate(names):
            entry = {"name": n, "layer": name, "normalization": name}
            if len(names) > 1:
                entry["channel"] = i
            inputs.append(entry)
    if [e["name"] for e in inputs] != list(task.channel_names):  # the task's own order
        raise InputError(f"cannot describe the inputs of {type(task).__name__} for export")
    return inputs, norms


def export_metadata(task: DEMTask, fmt: str) -> dict[str, Any]:
    """What a runtime needs besides the graph: inputs, normalizations, output, constraints."""
    inputs, norms = export_inputs(task)
    refine = _is_refine(task)
    output = (
        "correction in GSF units (B, 1, H, W): metres = initial DSM (holes filled) + gsf * output"
        if refine
        else "normalized heights (B, 1, H, W); metres = elevation_norm inverse"
    )
    meta: dict[str, Any] = {
        "format": fmt,
        "task": getattr(task, "task_name", "") or type(task).__name__,
        "input": f"normalized inputs (B, {len(inputs)}, H, W), float32, channels as 'inputs'; "
        "H and W multiples of size_multiple",
        "output": output,
        "inputs": inputs,
        "normalizations": norms,
        "bands": list(task.bands),
        "image_norm": norms["image_norm"],
        "elevation_norm": norms["elevation_norm"],
        "size_multiple": task.size_multiple,
        "target": task.hparams.get("target"),
        "pixel_size_m": task.hparams.get("pixel_size"),
        "vertical_crs": task.hparams.get("vertical_crs", "unknown"),
        "model_hparams": {
            k: v for k, v in task.hparams.items() if not k.endswith("_norm") and k != "input_norms"
        },
    }
    if refine:
        meta["gsf"] = task.gsf
    return meta


def export_model(task: DEMTask, output: str | Path, fmt: str = "torchscript") -> Path:
    """Write the generator as ``output`` (TorchScript ``.pt`` or ``.onnx``) plus ``output.json``."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    output = Path(output)
    meta = export_metadata(task, fmt)  # before any file is written: fails on odd tasks
    model = (
        copy.deepcopy(task.model).float().eval().to("cpu", memory_format=torch.contiguous_format)
    )
    fuse_conv_bn(model)  # inference-only graph: BatchNorms folded into their convs
    size = max(
        task.size_multiple, task.hparams.chip_size - task.hparams.chip_size % task.size_multiple
    )
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
