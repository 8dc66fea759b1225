"""``demgen test`` on a time store: image + mask -> future image checkpoints scored beside
persistence baselines, with the semantic fidelity of a building segmenter.

Every pair (day 0 ``f0``, date ``t``) of the split (:meth:`demgen.data.timestore.TimeStore.pairs`)
is predicted through the task's contract: its reflectance input (the task's day-0 image) gets
``frames[f0]`` in stored units, invalid pixels filled with ``task.fill_values``, its one-band
class input (the conditioning mask) gets ``masks[t]``. Inputs are found by unit, never by a
task's or a layer's name. The image input's ``valid`` is the pair's: usable at both dates, as
:class:`demgen.data.time_datasets.TimePairDataset` fills it in training; the mask is known
everywhere (``valid`` all True), as training feeds it. Three methods are scored on the same
pixels (usable at both dates):

- ``model``: the checkpoint's image at ``t``;
- ``persistence``: the day-0 image itself (nothing changes);
- ``persistence_painted``: the day-0 image with the new buildings (``mask_t & ~mask_t0``)
  painted in the *mean roof colour*: the per-band mean of the image at ``t`` over the new-
  building pixels (usable at both dates) of the TRAINING pairs of ``baseline_store``
  (default: the scored store); if those have none, over their ``mask_t`` pixels; if none
  either, over all their usable pixels (``roof_colour_from`` says which).

Image metrics (:func:`demgen.metrics.image.image_metrics`) are in reflectance (stored value x
the store manifest's ``reflectance_scale``, read as a divisor when above 1: see
:func:`store_reflectance_scale`) at data range 1, on the pairs' chips mosaicked as
:mod:`demgen.scoring_image` does (stacked with a NaN row between them): ``whole`` over every
usable pixel, plus ``fd_demgen_rand`` (predicted against true chips, over the pairs usable
everywhere); ``changed`` over the new-building pixels only. SSIM there counts only pixels
whose whole 11 px window is changed, which building-sized blobs rarely give: it is reported as
computed (often NaN, ``null`` in JSON); read PSNR, MAE and SAM on the changed pixels.

**Semantic fidelity.** With a ``segmenter`` (a task reading one reflectance image and writing
a ``probability``: demgen's segmentation task, trained on TRUE images), each method's image
and the true image at ``t`` are segmented, thresholded at ``p >= 0.5`` and compared with
``mask_t`` (the conditioning mask) over the usable pixels by
:func:`demgen.metrics.masks.mask_metrics`: F1, IoU, precision, recall. The true image's row
is the ceiling: what the segmenter finds on the real future image. Without a segmenter these
keys are None, with a note.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from demgen.data.timestore import TIME_STORE_FORMAT, TimeStore
from demgen.errors import InputError
from demgen.scoring_image import chip_fd, mosaic
from demgen.scoring_temporal_report import (
    MASK_KEYS,
    TEMPORAL_METHODS,
    THRESHOLD,
    render_temporal_report,
    temporal_figure,
    temporal_summary_line,
)

NO_SEGMENTER = "no segmenter given (--segmenter CKPT): building F1 not scored"
CHANGED_SSIM_NOTE = ("SSIM on changed pixels counts only pixels whose whole 11 px window is "
                     "changed (often none: NaN); read PSNR, MAE and SAM there")  # fmt: skip


def is_time_store(path: str | Path) -> bool:
    """Whether ``path`` holds a time store (its manifest's format is the time store's)."""
    mf = Path(path) / "manifest.json"
    try:
        return json.loads(mf.read_text()).get("format") == TIME_STORE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def reads_image_and_mask(spec: Any) -> bool:
    """The spec a time store feeds: one reflectance input, one one-band class input, a
    reflectance output (decided on units, never on names)."""
    units = sorted((la.unit, la.channels if la.unit == "class" else 0) for la in spec.inputs)
    return units == [("class", 1), ("reflectance", 0)] and spec.outputs[0].unit == "reflectance"


def _layers(spec: Any) -> tuple[Any, Any, Any]:
    """(image input, mask input, image output) of a temporal spec; InputError otherwise."""
    if not reads_image_and_mask(spec):
        have = ", ".join(f"{la.name} ({la.unit})" for la in spec.inputs)
        raise InputError(
            f"a time store scores image + mask -> image checkpoints (a reflectance input, a "
            f"one-band class input, a reflectance output); this one reads {have} and writes "
            f"{spec.outputs[0].name} ({spec.outputs[0].unit})"
        )
    img = next(la for la in spec.inputs if la.unit == "reflectance")
    mask = next(la for la in spec.inputs if la.unit == "class")
    return img, mask, spec.outputs[0]


def segmenter_layers(seg: Any) -> tuple[Any, Any]:
    """(image input, probability output) of a segmenter; one-line InputError otherwise."""
    probs = [la for la in seg.spec.outputs if la.unit == "probability"]
    if not probs:
        have = ", ".join(f"{la.name} ({la.unit})" for la in seg.spec.outputs)
        raise InputError(f"the segmenter writes {have}: it needs a probability output "
                         "(a segmentation checkpoint)")  # fmt: skip
    ins = seg.spec.inputs
    if len(ins) != 1 or ins[0].unit != "reflectance":
        raise InputError("the segmenter must read one reflectance image, it reads "
                         + ", ".join(f"{la.name} ({la.unit})" for la in ins))  # fmt: skip
    return ins[0], probs[0]


def _index(have: list[str], want: tuple[str, ...], what: str) -> list[int]:
    if len(want) == 1 and len(have) == 1:
        return [0]
    missing = [b for b in want if b not in have]
    if missing:
        raise InputError(f"{what} needs bands {missing}, which the images lack (bands {have})")
    return [have.index(b) for b in want]


def _pad(x: torch.Tensor, m: int) -> torch.Tensor:
    ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class _Runner:
    """``predict_batch`` of an inference copy (:func:`demgen.inference.scene.inference_copy`)
    on numpy batches: invalid pixels filled, padded to the window multiple, cropped back."""

    def __init__(self, task: Any, device: str | None, precision: str) -> None:
        from demgen.inference.scene import inference_copy

        self.task, self.device, self.amp = inference_copy(task, device, precision)
        self.multiple = task.spec.window_multiple

    def __call__(self, inputs: dict[str, np.ndarray], valid: dict[str, np.ndarray], output: str):
        h, w = next(iter(inputs.values())).shape[-2:]
        xs, vs = {}, {}
        for name, a in inputs.items():
            ok = torch.from_numpy(np.ascontiguousarray(valid[name]))[:, None]
            x = torch.from_numpy(np.nan_to_num(a).astype(np.float32))
            fill = torch.tensor(self.task.fill_values(name), dtype=torch.float32).view(-1, 1, 1)
            xs[name] = _pad(torch.where(ok, x, fill), self.multiple).to(self.device)
            vs[name] = _pad(ok.float(), self.multiple).to(self.device) > 0.5
        kind = self.device.split(":")[0]
        with (
            torch.inference_mode(),
            torch.autocast(kind, dtype=self.amp or torch.float32, enabled=self.amp is not None),
        ):
            out = self.task.predict_batch(xs, vs)[output]
        return out.float()[..., :h, :w].cpu().numpy().astype(np.float64)


def roof_colour(store_path: str | Path, bands: list[str]) -> dict[str, Any]:
    """The mean roof colour (stored units, per band of ``bands``) of the training pairs of
    ``store_path`` (module docstring), where it comes from and over how many pixels."""
    s = TimeStore(store_path)
    idx = _index(s.bands, tuple(bands), "the roof colour")
    kinds = ("new buildings", "buildings", "all usable pixels")
    sums = {k: np.zeros(len(idx)) for k in kinds}
    counts = dict.fromkeys(kinds, 0)
    for f0, ft in s.pairs("train"):
        ok = (np.asarray(s.clouds[f0]) == 0) & (np.asarray(s.clouds[ft]) == 0)
        mt = np.asarray(s.masks[ft]) > 0
        img = np.asarray(s.frames[ft])[idx].astype(np.float64)
        sel = {"new buildings": mt & (np.asarray(s.masks[f0]) == 0) & ok,
               "buildings": mt & ok, "all usable pixels": ok}  # fmt: skip
        for k, m in sel.items():
            sums[k] += img[:, m].sum(axis=1)
            counts[k] += int(m.sum())
    kind = next((k for k in kinds if counts[k]), None)
    if kind is None:
        raise InputError(f"{s.path}: the training split has no usable pair pixel "
                         "(no roof colour for persistence_painted)")  # fmt: skip
    return {"colour": sums[kind] / counts[kind], "from": kind, "pixels": counts[kind],
            "fitted_on": str(s.path)}  # fmt: skip


def store_reflectance_scale(manifest: dict[str, Any]) -> float:
    """Stored value -> reflectance factor of a time store: the multiplier
    ``build_time_store`` records (1e-4 for uint16 x 10000;
    :func:`demgen.data.timelayout.reflectance_multiplier`)."""
    return float(manifest.get("reflectance_scale") or 1.0)


def score_temporal_checkpoint(
    task: Any,
    store_path: str | Path,
    *,
    split: str = "test",
    segmenter: Any = None,
    batch_size: int = 8,
    device: str | None = None,
    precision: str = "auto",
    progress: bool = True,
    figure: str | Path | None = None,
    baseline_store: str | Path | None = None,
) -> dict[str, Any]:
    """Score the image + mask -> image ``task`` on the pairs of ``split`` (``all``: every
    pair) of the time store ``store_path`` beside persistence and persistence painted
    (module docstring). ``segmenter``: a segmentation task or its checkpoint path (loaded
    with :func:`demgen.tasks.registry.load_task`), for building F1. ``figure``: a PNG of the
    pair of median model L1. ``baseline_store``: where the roof colour is fitted."""
    from demgen.metrics.image import image_metrics
    from demgen.metrics.masks import mask_metrics

    store = TimeStore(store_path)
    img_in, mask_in, out_layer = _layers(task.spec)
    seg_path = None
    if isinstance(segmenter, str | Path):
        from demgen.tasks.registry import load_task

        seg_path, segmenter = str(segmenter), load_task(segmenter)
    seg_layers = segmenter_layers(segmenter) if segmenter is not None else None
    bands = list(out_layer.bands)
    idx_in = _index(store.bands, img_in.bands, f"the checkpoint's input {img_in.name!r}")
    idx_out = _index(store.bands, out_layer.bands, f"the checkpoint's output {out_layer.name!r}")
    seg_idx = _index(bands, seg_layers[0].bands, "the segmenter") if seg_layers else None
    pairs = store.pairs(split)
    if len(pairs) == 0:
        raise InputError(f"{store.path}: split {split!r} has no pairs")
    scale = store_reflectance_scale(store.manifest)
    roof = roof_colour(baseline_store or store.path, bands)
    colour = roof["colour"][:, None, None]
    model = _Runner(task, device, precision)
    seg = _Runner(segmenter, model.device, precision) if segmenter is not None else None
    preds: dict[str, list[np.ndarray]] = {m: [] for m in TEMPORAL_METHODS}
    found: dict[str, list[np.ndarray]] = {m: [] for m in (*TEMPORAL_METHODS, "true_image")}
    refs, changed, masks_t, valids, full, l1 = [], [], [], [], [], []
    bar = tqdm(total=len(pairs), desc=f"test {split}", unit="pair", disable=not progress)
    try:
        for s in range(0, len(pairs), batch_size):
            f0, ft = pairs[s : s + batch_size, 0], pairs[s : s + batch_size, 1]
            day0 = np.stack([np.asarray(store.frames[f]) for f in f0]).astype(np.float64)
            true = np.stack([np.asarray(store.frames[f])[idx_out] for f in ft]).astype(np.float64)
            m0 = np.stack([np.asarray(store.masks[f]) > 0 for f in f0])
            mt = np.stack([np.asarray(store.masks[f]) > 0 for f in ft])
            ok = np.stack([(np.asarray(store.clouds[a]) == 0) & (np.asarray(store.clouds[b]) == 0)
                           for a, b in zip(f0, ft, strict=True)])  # fmt: skip
            ok &= np.isfinite(day0).all(axis=1) & np.isfinite(true).all(axis=1)
            new = mt & ~m0
            ins = {img_in.name: day0[:, idx_in], mask_in.name: mt[:, None].astype(np.float32)}
            valid = {img_in.name: ok, mask_in.name: np.ones_like(ok)}
            images = {"model": model(ins, valid, out_layer.name), "persistence": day0[:, idx_out]}
            images["persistence_painted"] = np.where(new[:, None], colour, day0[:, idx_out])
            if seg is not None:
                for name, im in (*images.items(), ("true_image", true)):
                    p = seg({seg_layers[0].name: im[:, seg_idx]}, {seg_layers[0].name: ok},
                            seg_layers[1].name)  # fmt: skip
                    found[name] += list(p[:, 0] >= THRESHOLD)
            for b in range(len(f0)):
                ref = np.where(ok[b], true[b] * scale, np.nan).astype(np.float32)
                for name, im in images.items():
                    preds[name].append(np.where(ok[b], im[b] * scale, np.nan).astype(np.float32))
                refs.append(ref)
                changed.append(new[b] & ok[b])
                masks_t.append(mt[b])
                valids.append(ok[b])
                l1.append(float(np.nanmean(np.abs(preds["model"][-1] - ref))) if ok[b].any()
                          else math.inf)  # fmt: skip
                if ok[b].all():
                    full.append(len(refs) - 1)
            bar.update(len(f0))
    finally:
        bar.close()
    ref_all = mosaic(refs)
    if not np.isfinite(ref_all).any():
        raise InputError(f"{store.path}: split {split!r} has no usable pixel")
    chg = mosaic([c.astype(np.float32) for c in changed]) == 1
    result: dict[str, Any] = {
        "store": str(store.path),
        "store_format": TIME_STORE_FORMAT,
        "split": split,
        "pairs": len(pairs),
        "output": out_layer.name,
        "unit": "reflectance",
        "bands": bands,
        "reflectance_scale": scale,
        "data_range": 1.0,
        "mask_kind": store.manifest.get("mask_kind"),
        "valid_pixels": int(sum(int(v.sum()) for v in valids)),
        "changed_pixels": int(chg.sum()),
        "fd_pairs": len(full),
        "roof_colour": [float(v) for v in roof["colour"]],
        "roof_colour_reflectance": [float(v) * scale for v in roof["colour"]],
        "roof_colour_from": roof["from"],
        "roof_colour_pixels": roof["pixels"],
        "roof_colour_fitted_on": roof["fitted_on"],
        "segmenter": None,
        "notes": {"changed_ssim": CHANGED_SSIM_NOTE},
        "methods": {},
    }
    if segmenter is not None:
        result["segmenter"] = {"name": getattr(segmenter, "task_name", None)
                               or type(segmenter).__name__, "path": seg_path,
                               "output": seg_layers[1].name, "threshold": THRESHOLD}  # fmt: skip
    else:
        result["notes"]["segmenter"] = NO_SEGMENTER
    vm, mm = np.stack(valids), np.stack(masks_t)

    def semantic(name: str) -> dict[str, Any]:
        if seg is None:
            return dict.fromkeys(MASK_KEYS)
        m = mask_metrics(np.stack(found[name]), mm, vm)
        return {k: m[k] for k in (*MASK_KEYS, "tp", "fp", "fn")}

    for name in TEMPORAL_METHODS:
        pm = mosaic(preds[name])
        whole = image_metrics(pm, ref_all, data_range=1.0, band_names=bands)
        whole["fd_demgen_rand"], note = chip_fd(preds[name], refs, full, "pairs")
        if note:
            whole["fd_demgen_rand_note"] = note
        part = image_metrics(pm, ref_all, chg, data_range=1.0, band_names=bands)
        result["methods"][name] = {"whole": whole, "changed": part, **semantic(name)}
    result["true_image"] = semantic("true_image")
    if figure is not None:
        temporal_figure(figure, preds, refs, masks_t, l1, bands, result)
    return result


__all__ = ["TEMPORAL_METHODS", "is_time_store", "reads_image_and_mask", "render_temporal_report",
           "roof_colour", "score_temporal_checkpoint", "segmenter_layers",
           "store_reflectance_scale", "temporal_summary_line"]  # fmt: skip
