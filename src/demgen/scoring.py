"""Score a checkpoint on a chip-store split, in the task's units, beside honest baselines.

``demgen test CHECKPOINT STORE`` is the chip-level counterpart of ``demgen evaluate``
(which scores whole predicted rasters): every chip of the split is predicted through the
task's contract (``task.spec`` and ``task.predict_batch``: stored inputs in their units,
invalid pixels filled with ``task.fill_values``, heights back in metres), and compared with
the stored heights over the pixels the store marks valid. Two baselines fitted on the
store's training split (:func:`demgen.baselines.fit_baselines`) are scored on the same
pixels: the training-mean elevation and a per-pixel linear regression on the image bands.

Image outputs (DEM -> image tasks: the first output's unit is ``reflectance``) are scored
by :mod:`demgen.scoring_image` instead, beside its own two baselines; :func:`score_checkpoint`
and :func:`render_report` dispatch on that unit, never on a task's name.

Time stores (manifest format ``demgen-timestore/1``) hold dated chips and (day 0, t) pairs:
checkpoints reading a reflectance image and a one-band class mask (image + mask -> future
image) are scored there by :mod:`demgen.scoring_temporal`, beside persistence baselines and
with a segmenter's building F1; the dispatch is on the store's format and the spec's input
units.

Absolute models also get ``mae_chip_level_free_m``: the MAE once each chip's mean error is
removed, the relief error without the chip's level (on scenes no training saw, the level of
a synthetic scene is drawn at random and dominates ``mae_m``).

Chips are scored as one mosaic: stacked one above the other with a row of NaN between them,
so slopes, aspects and SSIM windows never straddle two chips, and the DEM metrics of
:mod:`demgen.metrics.dem` apply unchanged.

**Relative models** (per-chip height normalizations such as ``global-shift``: their output
layer is ``relative``) cannot know a chip's absolute level. With no coarse reference layer in
the store (none of demgen's stores has one yet) they are scored with explicitly relative
metrics: every method's prediction (the model's and the baselines') is first shifted per chip
by its mean error over the chip's valid pixels, and each metric key gets the suffix
``_rel`` (``mae_rel_m`` ...), so a relative score is never mistaken for an absolute one;
``r2_rel`` compares with each chip's own mean height (``1 - SSE / sum (h - mean_chip h)^2``),
so the training-mean baseline, flat in every chip after its shift, scores exactly 0.
The same holds for stores whose heights are themselves relative (``.npz`` imports, whose
manifest records ``z_unit: relative``): then "metres" are the store's relative units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from demgen.data.timestore import TIME_STORE_FORMAT
from demgen.errors import InputError
from demgen.scoring_image import (
    ChipPredictor,
    mosaic,
    render_image_report,
    score_image_checkpoint,
    split_chips,
)
from demgen.scoring_temporal import (
    is_time_store,
    reads_image_and_mask,
    render_temporal_report,
    score_temporal_checkpoint,
)

#: Methods scored, in report order.
METHODS = ("model", "training_mean", "linear_bands")
_METHOD_TITLES = {
    "model": "model (demgen)",
    "training_mean": "training-mean elevation",
    "linear_bands": "per-pixel linear regression on bands",
}


def _shift_per_chip(pred: np.ndarray, ref: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``pred`` minus its mean error over the chip's valid pixels (relative scoring)."""
    if not ok.any():
        return pred
    return pred - float(np.mean(pred[ok] - ref[ok]))


def _metrics(pred: np.ndarray, ref: np.ndarray, pixel: tuple[float, float] | None) -> dict:
    from demgen.metrics.dem import error_stats, image_stats, terrain_stats, valid_pixels

    ok = valid_pixels(pred, ref)
    out: dict[str, Any] = error_stats(pred, ref, ok)
    out |= image_stats(pred, ref, ok)
    if pixel is not None:
        out |= terrain_stats(pred, ref, pixel, ok)
    return out


def _suffix(m: dict[str, Any], relative: bool) -> dict[str, Any]:
    """Rename ``mae_m`` -> ``mae_rel_m`` (and so on) for relative scores."""
    if not relative:
        return m
    out = {}
    for k, v in m.items():
        if k in ("n_pixels", "aspect_pixels"):
            out[k] = v
        elif k.endswith("_m"):
            out[k[:-2] + "_rel_m"] = v
        else:
            out[k + "_rel"] = v
    return out


def score_checkpoint(
    task: Any,
    store_path: str | Path,
    *,
    split: str = "test",
    batch_size: int = 8,
    device: str | None = None,
    precision: str = "auto",
    progress: bool = True,
    figure: str | Path | None = None,
    baseline_store: str | Path | None = None,
    segmenter: Any = None,
) -> dict[str, Any]:
    """Score ``task`` on the chips of ``split`` of the chip store ``store_path`` (module
    docstring): metrics of the model and both baselines on the same valid pixels. With
    ``figure``, a PNG of the chip of median model MAE (prediction, truth, error). The
    baselines are fitted on the training split of ``baseline_store`` (default: the scored
    store): give the store the model trained on when scoring another store's chips. On a
    time store, the pairs are scored by :mod:`demgen.scoring_temporal` (``segmenter``: a
    segmentation task or checkpoint path, for building F1; time stores only)."""
    from demgen.baselines import fit_baselines
    from demgen.data.chips import ChipStore
    from demgen.inference.scene import inference_copy

    if is_time_store(store_path):  # image + mask -> future image: :mod:`demgen.scoring_temporal`
        return score_temporal_checkpoint(
            task, store_path, split=split, segmenter=segmenter, batch_size=batch_size,
            device=device, precision=precision, progress=progress, figure=figure,
            baseline_store=baseline_store,
        )  # fmt: skip
    if segmenter is not None:
        raise InputError(f"{store_path}: a segmenter scores building F1 on time stores only "
                         f"({TIME_STORE_FORMAT}); this is not one")  # fmt: skip
    if reads_image_and_mask(task.spec):
        raise InputError(f"the checkpoint reads a day-0 image and a mask: score it on a time "
                         f"store ({TIME_STORE_FORMAT}), not {store_path}")  # fmt: skip
    out_layer = task.spec.outputs[0]
    if out_layer.unit == "reflectance":  # DEM -> image: :mod:`demgen.scoring_image`
        return score_image_checkpoint(
            task, store_path, split=split, batch_size=batch_size, device=device,
            precision=precision, progress=progress, figure=figure, baseline_store=baseline_store,
        )  # fmt: skip
    if out_layer.unit != "metre":
        raise InputError(
            f"the checkpoint writes {out_layer.name!r} in {out_layer.unit}: demgen test scores "
            "height (metre) and image (reflectance) outputs"
        )
    store = ChipStore(store_path)
    chips = split_chips(store, split)
    # the copy prediction uses: eval mode, BatchNorms folded, channels_last; the caller's
    # task is left as it was
    model, device, amp = inference_copy(task, device, precision)
    predictor = ChipPredictor(model, store, device, amp)
    mean_bl, lin_bl = fit_baselines(baseline_store or store.path)
    heights_relative = store.manifest.get("z_unit") == "relative"
    relative = bool(out_layer.relative) or heights_relative
    rel_model = bool(out_layer.relative)
    preds: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    level_free: dict[str, list[float]] = {m: [] for m in METHODS}  # per chip: sum |e - mean e|
    refs: list[np.ndarray] = []
    sst_chip = 0.0  # sum of (ref - its chip's mean)^2: the R2 baseline of relative scores
    bar = tqdm(total=int(chips.size), desc=f"test {split}", unit="chip", disable=not progress)
    try:
        for s in range(0, chips.size, batch_size):
            batch = chips[s : s + batch_size]
            model_out = predictor(batch)[:, 0]
            for b, j in enumerate(batch):
                ref = np.asarray(store.elevation[j], np.float64)
                ok = np.asarray(store.mask[j], bool) & np.isfinite(ref)
                ref = np.where(ok, ref, np.nan)
                # every stored band, as fit_baselines fitted them
                image = np.asarray(store.image[j]).astype(np.float64)
                image = np.nan_to_num(image)
                chip = {
                    "model": model_out[b],
                    "training_mean": mean_bl.predict(image).astype(np.float64),
                    "linear_bands": lin_bl.predict(image).astype(np.float64),
                }
                if ok.any():
                    sst_chip += float(np.sum((ref[ok] - ref[ok].mean()) ** 2))
                for name, p in chip.items():
                    if relative:
                        p = _shift_per_chip(p, ref, ok)
                    elif ok.any():
                        e = p[ok] - ref[ok]
                        level_free[name].append(float(np.sum(np.abs(e - e.mean()))))
                    preds[name].append(np.where(ok, p, np.nan))
                refs.append(ref)
            bar.update(len(batch))
    finally:
        bar.close()
    ref_all = mosaic(refs)
    if not np.isfinite(ref_all).any():
        raise InputError(f"{store.path}: split {split!r} has no valid pixel")
    px = store.manifest.get("pixel_size_m")
    pixel = (float(px[0]), float(px[1])) if px else None
    result: dict[str, Any] = {
        "store": str(store.path),
        "split": split,
        "baselines_fitted_on": str(baseline_store or store.path),
        "chips": int(chips.size),
        "output": out_layer.name,
        "unit": "relative" if heights_relative else "metre",
        "relative": relative,
        "relative_reason": (
            "per-chip model" if rel_model else "store heights are relative" if relative else None
        ),
        "pixel_size_m": list(pixel) if pixel else None,
        "methods": {},
    }
    for name in METHODS:
        m = _metrics(mosaic(preds[name]), ref_all, pixel)
        if relative:  # R2 against each chip's own mean: a flat chip scores 0, not more
            sse = m["rmse_m"] ** 2 * m["n_pixels"]
            m["r2"] = 1.0 - sse / sst_chip if sst_chip > 0 else float("nan")
        elif m.get("n_pixels"):  # the MAE once each chip's mean error (its level) is removed
            m["mae_chip_level_free_m"] = sum(level_free[name]) / m["n_pixels"]
        result["methods"][name] = _suffix(m, relative)
    if figure is not None:
        _figure(figure, preds["model"], refs, pixel, result)
    return result


def _figure(path, preds: list[np.ndarray], refs: list[np.ndarray], pixel, r) -> None:
    """The chip whose model MAE is the median of the split's: a typical chip, not the best."""
    from demgen.viz.figures import evaluation_figure

    maes = [float(np.nanmean(np.abs(p - t))) if np.isfinite(t).any() else np.inf
            for p, t in zip(preds, refs, strict=True)]  # fmt: skip
    order = np.argsort(maes)
    k = int(order[len([m for m in maes if np.isfinite(m)]) // 2])
    kind = "relative MAE" if r["relative"] else "MAE"
    evaluation_figure(path, preds[k], refs[k], pixel or (1.0, 1.0),
                      title=f"{r['split']} chip of median {kind}: {maes[k]:.2f}")  # fmt: skip


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if abs(v) < 5e-4:
        v = 0.0  # no "-0.000"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def render_report(r: dict[str, Any], checkpoint: str | Path) -> str:
    """A Markdown report of :func:`score_checkpoint`'s result (heights, images, pairs)."""
    if r.get("store_format") == TIME_STORE_FORMAT:
        return render_temporal_report(r, checkpoint)
    if r.get("unit") == "reflectance":
        return render_image_report(r, checkpoint)
    sfx = "_rel" if r["relative"] else ""
    unit = "relative units" if r["unit"] == "relative" else "m"
    keys = [(f"mae{sfx}_m", "MAE"), (f"rmse{sfx}_m", "RMSE"), (f"bias{sfx}_m", "bias"),
            (f"nmad{sfx}_m", "NMAD"), (f"le90{sfx}_m", "LE90"), (f"r2{sfx}", "R2"),
            (f"ssim{sfx}", "SSIM")]  # fmt: skip
    if r["pixel_size_m"]:
        keys.append((f"slope_rmse{sfx}_deg", "slope RMSE (deg)"))
    head = " | ".join(label for _, label in keys)
    lines = [
        f"# `demgen test`: `{Path(checkpoint).name}` on `{r['store']}` ({r['split']})",
        "",
        f"{r['chips']} chips; {r['methods']['model']['n_pixels']:,} valid pixels, the same for "
        f"every method. Heights in {unit}.",
    ]
    if r["relative"]:
        lines += [
            "",
            f"Relative scores ({r['relative_reason']}): each method's prediction is shifted per "
            "chip by its mean error before scoring, so these measure relief, not absolute level.",
        ]
    lines += ["", f"| method | {head} |", "| --- |" + " ---: |" * len(keys)]
    for name in METHODS:
        m = r["methods"][name]
        lines.append(
            f"| {_METHOD_TITLES[name]} | " + " | ".join(_fmt(m.get(k)) for k, _ in keys) + " |"
        )
    return "\n".join(lines) + "\n"
