"""``demgen test`` for image outputs (DEM -> image): a checkpoint scored on a chip-store
split in reflectance, beside the two baselines of :mod:`demgen.baselines_image`.

Every chip of the split is predicted through the task's contract: the stored heights in
metres (invalid pixels filled with ``task.fill_values``, and the land cover when the task
reads it), decoded by the task to the stored image units. The training-mean image and the
per-pixel linear regression on the relief, both fitted on the store's training split, are
predicted on the same chips. All three are compared with the stored image over the chip's
valid pixels (mask, finite height, every band finite) in reflectance (stored value x the
task's ``reflectance_scale``) at data range 1, with :func:`demgen.metrics.image.image_metrics`
on the chips mosaicked (stacked with a NaN row between them, so SSIM windows never straddle
two chips): PSNR, SSIM, MS-SSIM (None for mosaics too narrow for 5 scales, with a note), SAM,
ERGAS, RMSE, MAE, per band. ``fd_demgen_rand``, the Fréchet distance on demgen's fixed random
features (:mod:`demgen.metrics.perceptual`, not Inception FID), compares the set of predicted
chips with the set of true ones, over the chips valid everywhere.

The chip reader (:class:`ChipPredictor`, :func:`mosaic`, :func:`split_chips`) is shared with
:mod:`demgen.scoring` (height outputs), which dispatches here; it lives on this side because
an import back would be a cycle.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from demgen.errors import InputError
from demgen.io.raster import true_colour_indices

#: Methods scored, in report order, and their titles.
IMAGE_METHODS = ("model", "training_mean_image", "linear_relief")
IMAGE_TITLES = {
    "model": "model",
    "training_mean_image": "training mean image",
    "linear_relief": "linear relief",
}


# ---------------------------------------------------------------- chips through the contract
def store_layer(store: Any, name: str) -> str:
    """The store layer feeding the task's input ``name``: the layer of that name, else the
    image for the first input of image -> DEM tasks (``image``, refinement's ``ortho1``) and
    the heights for DEM -> image's ``dem``."""
    if name in store.layers:
        return name
    if name in ("image", "ortho1"):
        return "image"
    if name == "dem":
        return "elevation"
    raise InputError(
        f"{store.path}: the checkpoint needs input layer {name!r}, which the store does not "
        f"hold (layers: {sorted(store.layers)})"
    )


def channel_index(store: Any, layer: str, bands: tuple[str, ...], name: str) -> list[int]:
    have = list(store.layers[layer].get("bands") or [])
    if len(bands) == 1 and len(have) == 1:
        return [0]
    missing = [b for b in bands if b not in have]
    if missing:
        raise InputError(
            f"{store.path}: layer {layer!r} lacks bands {missing} that the checkpoint's input "
            f"{name!r} needs (it has {have})"
        )
    return [have.index(b) for b in bands]


def _pad(x: torch.Tensor, m: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if not (ph or pw):
        return x
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")


class ChipPredictor:
    """Predicts chips of a store through the task's contract (its first output layer)."""

    def __init__(self, task: Any, store: Any, device: str, amp_dtype: Any) -> None:
        self.task, self.store, self.device, self.amp_dtype = task, store, device, amp_dtype
        spec = task.spec
        self.output = spec.outputs[0]
        self.multiple = spec.window_multiple
        self.inputs = []
        for la in spec.inputs:
            layer = store_layer(store, la.name)
            idx = channel_index(store, layer, la.bands, la.name)
            fill = torch.tensor(task.fill_values(la.name), dtype=torch.float32)
            self.inputs.append((la.name, layer, idx, fill.view(-1, 1, 1)))

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """The output (B, C, H, W) float64, in its units, of chips ``chips`` (indices)."""
        store = self.store
        mask = np.stack([np.asarray(store.mask[j], bool) for j in chips])
        inputs, valid = {}, {}
        for name, layer, idx, fill in self.inputs:
            a = np.stack([store.read_layer(layer, int(j))[idx] for j in chips]).astype(np.float32)
            ok = mask & np.all(np.isfinite(a), axis=1)
            t = torch.from_numpy(a)
            v = torch.from_numpy(ok)[:, None]
            t = torch.where(v, torch.nan_to_num(t), fill)  # no NaN reaches a network
            inputs[name], valid[name] = t, v
        h, w = mask.shape[-2:]
        inputs = {k: _pad(v, self.multiple).to(self.device) for k, v in inputs.items()}
        valid = {k: _pad(v.float(), self.multiple).to(self.device) > 0.5 for k, v in valid.items()}
        kind = self.device.split(":")[0]
        with (
            torch.inference_mode(),
            torch.autocast(
                kind, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
            ),
        ):
            out = self.task.predict_batch(inputs, valid)[self.output.name]
        return out.float()[..., :h, :w].cpu().numpy().astype(np.float64)


def mosaic(chips: list[np.ndarray]) -> np.ndarray:
    """Chips (H, W) or (C, H, W) stacked vertically with one NaN row between them."""
    gap = np.full((*chips[0].shape[:-2], 1, chips[0].shape[-1]), np.nan)
    rows = []
    for c in chips:
        rows += [c, gap]
    return np.concatenate(rows[:-1], axis=-2)


def split_chips(store: Any, split: str) -> np.ndarray:
    """Store indices of ``split``; ``all``: every chip (a store no model trained on)."""
    try:
        chips = np.arange(len(store)) if split == "all" else store.indices(split)
    except KeyError:
        raise InputError(f"{store.path}: no split {split!r} (train, val, test, all)") from None
    if chips.size == 0:
        raise InputError(f"{store.path}: split {split!r} has no chips")
    return chips


# ---------------------------------------------------------------- scoring
def reflectance_scale(task: Any) -> float:
    """Stored value -> reflectance: the task's ``reflectance_scale``, else the default of
    its output dtype."""
    from demgen.data.normalize import default_reflectance_scale

    scale = task.hparams.get("reflectance_scale")
    if scale is None:
        scale = default_reflectance_scale(task.spec.outputs[0].dtype)
    return float(scale)


def chip_fd(
    preds: list[np.ndarray], refs: list[np.ndarray], full: list[int], what: str = "chips"
) -> tuple[Any, Any]:
    """(``fd_demgen_rand`` of the predicted against the true chips ``full`` at data range 1,
    a note or None): None with a note when fewer than 2 chips are valid everywhere."""
    from demgen.metrics.perceptual import frechet_distance_demgen_random_features as fd

    if len(full) < 2:
        return None, f"needs at least 2 {what} valid everywhere; the split has {len(full)}"
    return fd([preds[i] for i in full], [refs[i] for i in full], data_range=1.0), None


def score_image_checkpoint(
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
) -> dict[str, Any]:
    """Score the image-output ``task`` on the chips of ``split`` of ``store_path`` (module
    docstring): the model and both baselines on the same valid pixels, in reflectance at data
    range 1. With ``figure``, a PNG of the chip of median model L1 (true colour of the
    prediction and the truth, and the per-pixel error). The baselines are fitted on the
    training split of ``baseline_store`` (default: the scored store)."""
    from demgen.baselines_image import band_index, fit_image_baselines
    from demgen.data.chips import ChipStore
    from demgen.inference.scene import inference_copy
    from demgen.metrics.image import image_metrics

    store = ChipStore(store_path)
    out_layer = task.spec.outputs[0]
    if out_layer.unit != "reflectance":
        raise InputError(f"the checkpoint writes {out_layer.name!r} in {out_layer.unit}, "
                         "not reflectance")  # fmt: skip
    chips = split_chips(store, split)
    bands = list(out_layer.bands)
    idx = band_index(store, bands)
    scale = reflectance_scale(task)
    model, device, amp = inference_copy(task, device, precision)
    predictor = ChipPredictor(model, store, device, amp)
    mean_bl, lin_bl = fit_image_baselines(baseline_store or store.path, task)
    preds: dict[str, list[np.ndarray]] = {m: [] for m in IMAGE_METHODS}
    refs: list[np.ndarray] = []
    full: list[int] = []  # chips valid everywhere (for the Fréchet distance)
    l1: list[float] = []  # the model's per-chip L1 (for the figure)
    bar = tqdm(total=int(chips.size), desc=f"test {split}", unit="chip", disable=not progress)
    try:
        for s in range(0, chips.size, batch_size):
            batch = chips[s : s + batch_size]
            out = {"model": predictor(batch)}
            elev = np.stack([np.asarray(store.elevation[j], np.float64) for j in batch])
            img = np.stack([np.asarray(store.image[j])[idx] for j in batch]).astype(np.float64)
            ok = np.stack([np.asarray(store.mask[j], bool) for j in batch])
            ok &= np.isfinite(elev) & np.isfinite(img).all(axis=1)
            lc = None
            if mean_bl.landcover_layer is not None:
                lc = np.stack([store.read_layer(mean_bl.landcover_layer, int(j))[0]
                               for j in batch]).astype(np.float64)  # fmt: skip
            dem = np.where(ok, elev, np.nan)
            out["training_mean_image"] = mean_bl.predict(dem, lc)
            out["linear_relief"] = lin_bl.predict(dem, lc)
            for b in range(len(batch)):
                ref = np.where(ok[b], img[b] * scale, np.nan).astype(np.float32)
                for name, p in out.items():
                    preds[name].append(np.where(ok[b], p[b] * scale, np.nan).astype(np.float32))
                refs.append(ref)
                err = np.abs(preds["model"][-1] - ref)
                l1.append(float(np.nanmean(err)) if ok[b].any() else math.inf)
                if ok[b].all():
                    full.append(len(refs) - 1)
            bar.update(len(batch))
    finally:
        bar.close()
    ref_all = mosaic(refs)
    if not np.isfinite(ref_all).any():
        raise InputError(f"{store.path}: split {split!r} has no valid pixel")
    px = store.manifest.get("pixel_size_m")
    result: dict[str, Any] = {
        "store": str(store.path),
        "split": split,
        "baselines_fitted_on": str(baseline_store or store.path),
        "chips": int(chips.size),
        "output": out_layer.name,
        "unit": "reflectance",
        "relative": False,
        "data_range": 1.0,
        "reflectance_scale": scale,
        "bands": bands,
        "pixel_size_m": [float(px[0]), float(px[1])] if px else None,
        "fd_chips": len(full),
        "methods": {},
    }
    for name in IMAGE_METHODS:
        m = image_metrics(mosaic(preds[name]), ref_all, data_range=1.0, band_names=bands)
        m["fd_demgen_rand"], note = chip_fd(preds[name], refs, full)
        if note:
            m["fd_demgen_rand_note"] = note
        result["methods"][name] = m
    if figure is not None:
        _figure(figure, preds["model"], refs, l1, bands, result)
    return result


def _figure(path, preds, refs, l1: list[float], bands: list[str], r: dict[str, Any]) -> None:
    """The chip whose model L1 is the median of the split's: a typical chip, not the best.
    Prediction and truth in true colour under the truth's 2-98 % stretch, and the per-pixel
    mean absolute error over the bands."""
    import matplotlib.pyplot as plt

    from demgen.io.raster import atomic_path
    from demgen.viz import figures  # noqa: F401  (selects the Agg backend)

    finite = [i for i, v in enumerate(l1) if math.isfinite(v)]
    k = sorted(finite, key=lambda i: l1[i])[len(finite) // 2] if finite else 0
    sel = true_colour_indices(bands)
    truth, pred = refs[k][sel], preds[k][sel]
    lo, hi = (np.nanpercentile(truth, q) for q in (2, 98)) if np.isfinite(truth).any() else (0, 1)

    def rgb(a: np.ndarray) -> np.ndarray:
        return np.nan_to_num(np.clip((np.moveaxis(a, 0, -1) - lo) / max(hi - lo, 1e-6), 0, 1))

    err = np.mean(np.abs(preds[k] - refs[k]), axis=0)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8), constrained_layout=True)
    axes[0].imshow(rgb(pred))
    axes[0].set_title("Prediction (true colour)")
    axes[1].imshow(rgb(truth))
    axes[1].set_title("Truth (true colour)")
    im = axes[2].imshow(err, cmap="magma", vmin=0.0)
    axes[2].set_title("Error: mean |prediction - truth| over bands")
    fig.colorbar(im, ax=axes[2], shrink=0.8, label="reflectance")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{r['split']} chip of median L1: {l1[k]:.4f} (reflectance)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


# ---------------------------------------------------------------- reports
def _num(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, fmt)


_COLUMNS = [("psnr_db", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".3f"),
            ("ms_ssim", "MS-SSIM", ".3f"), ("sam_deg", "SAM (deg)", ".2f"),
            ("ergas", "ERGAS", ".2f"), ("rmse", "RMSE", ".4f"), ("mae", "MAE", ".4f"),
            ("fd_demgen_rand", "FD (demgen rand)", ".4g")]  # fmt: skip


def render_image_report(r: dict[str, Any], checkpoint: str | Path) -> str:
    """A Markdown report of :func:`score_image_checkpoint`'s result."""
    model = r["methods"]["model"]
    lines = [
        f"# `demgen test`: `{Path(checkpoint).name}` on `{r['store']}` ({r['split']})",
        "",
        f"{r['chips']} chips; {model['valid_px']:,} valid pixels, the same for every method. "
        f"Reflectance (stored value x {r['reflectance_scale']:g}) at data range 1; baselines "
        f"fitted on the training split of `{r['baselines_fitted_on']}`.",
        "",
        "| method | " + " | ".join(c[1] for c in _COLUMNS) + " |",
        "| --- |" + " ---: |" * len(_COLUMNS),
    ]
    for name in IMAGE_METHODS:
        m = r["methods"][name]
        cells = " | ".join(_num(m.get(k), f) for k, _, f in _COLUMNS)
        lines.append(f"| {IMAGE_TITLES[name]} | {cells} |")
    lines += ["", "PSNR (dB) per band:", "",
              "| method | " + " | ".join(r["bands"]) + " |",
              "| --- |" + " ---: |" * len(r["bands"])]  # fmt: skip
    for name in IMAGE_METHODS:
        pb = r["methods"][name]["per_band"]
        cells = " | ".join(_num(pb[b]["psnr_db"], ".2f") for b in r["bands"])
        lines.append(f"| {IMAGE_TITLES[name]} | {cells} |")
    notes = [model.get("ms_ssim_note"), model.get("fd_demgen_rand_note")]
    notes = [f"- {n}" for n in notes if n]
    notes.append("- FD (demgen rand): Fréchet distance on demgen's fixed random features "
                 f"over {r['fd_chips']} chips valid everywhere; not Inception FID.")  # fmt: skip
    lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def summary_line(r: dict[str, Any]) -> str:
    """``model: PSNR 23.45 dB, SSIM 0.712, SAM 3.21 deg | training mean image: ...``."""
    parts = []
    for name in IMAGE_METHODS:
        m = r["methods"][name]
        psnr, ssim, sam = (_num(m["psnr_db"], ".2f"), _num(m["ssim"], ".3f"),
                           _num(m["sam_deg"], ".2f"))  # fmt: skip
        parts.append(f"{IMAGE_TITLES[name]}: PSNR {psnr} dB, SSIM {ssim}, SAM {sam} deg")
    return " | ".join(parts)
