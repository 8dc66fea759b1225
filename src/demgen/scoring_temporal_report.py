"""The outputs of :mod:`demgen.scoring_temporal`: the Markdown report (whole image, new
buildings, building F1), the one-line summary and the figure of the pair of median model L1.

A leaf beside :mod:`demgen.scoring_temporal` (which re-exports its public names), holding the
method names and titles both use.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from demgen.io.raster import true_colour_indices

#: Methods scored, in report order, and their titles.
TEMPORAL_METHODS = ("model", "persistence", "persistence_painted")
TEMPORAL_TITLES = {"model": "model", "persistence": "persistence (day-0 image)",
                   "persistence_painted": "persistence + mean roof colour"}  # fmt: skip
THRESHOLD = 0.5  # segmenter probability -> building
MASK_KEYS = ("f1", "iou", "precision", "recall")


def temporal_figure(path, preds, refs, masks_t, l1: list[float], bands: list[str], r) -> None:
    """The pair of median model L1: day 0, mask_t, model, true image at t (true colour under
    the truth's 2-98 % stretch) and the per-pixel mean absolute error over the bands."""
    import matplotlib.pyplot as plt

    from demgen.io.raster import atomic_path
    from demgen.viz import figures  # noqa: F401  (selects the Agg backend)

    finite = [i for i, v in enumerate(l1) if math.isfinite(v)]
    k = sorted(finite, key=lambda i: l1[i])[len(finite) // 2] if finite else 0
    sel = true_colour_indices(bands)
    truth = refs[k][sel]
    lo, hi = (np.nanpercentile(truth, q) for q in (2, 98)) if np.isfinite(truth).any() else (0, 1)

    def rgb(a: np.ndarray) -> np.ndarray:
        return np.nan_to_num(np.clip((np.moveaxis(a, 0, -1) - lo) / max(hi - lo, 1e-6), 0, 1))

    fig, axes = plt.subplots(1, 5, figsize=(20, 4.4), constrained_layout=True)
    panels = [(rgb(preds["persistence"][k][sel]), "Day 0 (true colour)"),
              (masks_t[k], "mask_t (conditioning)"), (rgb(preds["model"][k][sel]), "Model at t"),
              (rgb(truth), "True image at t")]  # fmt: skip
    for ax, (a, title) in zip(axes, panels, strict=False):
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title)
    im = axes[4].imshow(np.mean(np.abs(preds["model"][k] - refs[k]), axis=0), cmap="magma", vmin=0)
    axes[4].set_title("Error: mean |model - truth| over bands")
    fig.colorbar(im, ax=axes[4], shrink=0.8, label="reflectance")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{r['split']} pair of median model L1: {l1[k]:.4f} (reflectance)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


# ---------------------------------------------------------------- reports
def _num(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, fmt)


_IMAGE_COLUMNS = [("psnr_db", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".3f"),
                  ("sam_deg", "SAM (deg)", ".2f"), ("ergas", "ERGAS", ".2f"),
                  ("rmse", "RMSE", ".4f"), ("mae", "MAE", ".4f")]  # fmt: skip
_FD = ("fd_demgen_rand", "FD (demgen rand)", ".4g")


def _table(rows: list[tuple[str, dict]], cols: list[tuple[str, str, str]],
           head: str = "method") -> list[str]:  # fmt: skip
    lines = [f"| {head} | " + " | ".join(c[1] for c in cols) + " |",
             "| --- |" + " ---: |" * len(cols)]  # fmt: skip
    for title, m in rows:
        lines.append(f"| {title} | " + " | ".join(_num(m.get(k), f) for k, _, f in cols) + " |")
    return lines


def render_temporal_report(r: dict[str, Any], checkpoint: str | Path | None = None) -> str:
    """A Markdown report of :func:`score_temporal_checkpoint`'s result: the whole-image
    table, the new-building table and the building F1 table."""
    ckpt = checkpoint or r.get("checkpoint") or "checkpoint"
    meth = r["methods"]
    colour = ", ".join(f"{v:.4f}" for v in r["roof_colour_reflectance"])
    lines = [
        f"# `demgen test`: `{Path(ckpt).name}` on `{r['store']}` ({r['split']})",
        "",
        f"{r['pairs']} pairs (day 0, t); {r['valid_pixels']:,} pixels usable at both dates, "
        f"{r['changed_pixels']:,} of them new buildings (mask_t & ~mask_t0), the same for "
        f"every method. Reflectance (stored value x {r['reflectance_scale']:g}) at data range "
        f"1. The roof colour ({colour}) is the mean over the {r['roof_colour_from']} of the "
        f"training pairs of `{r['roof_colour_fitted_on']}` ({r['roof_colour_pixels']:,} px).",
        "",
        "## Whole image",
        "",
        *_table([(TEMPORAL_TITLES[n], meth[n]["whole"]) for n in TEMPORAL_METHODS],
                [*_IMAGE_COLUMNS, _FD]),
        "",
        "## New buildings (changed pixels only)",
        "",
        *_table([(TEMPORAL_TITLES[n], meth[n]["changed"]) for n in TEMPORAL_METHODS],
                _IMAGE_COLUMNS),
        "",
        f"## Semantic fidelity: building F1 against mask_t (segmenter, p >= {THRESHOLD:g})",
        "",
    ]  # fmt: skip
    seg = r.get("segmenter")
    if seg:
        where = f"`{seg['path']}` ({seg['name']})" if seg.get("path") else f"`{seg['name']}`"
        lines.append(f"Segmenter {where}, output `{seg['output']}`; the true image's row is "
                     "the ceiling (the segmenter on the real image at t).")  # fmt: skip
        lines.append("")
    rows = [(TEMPORAL_TITLES[n], meth[n]) for n in TEMPORAL_METHODS]
    rows.append(("true image at t (ceiling)", r["true_image"]))
    labels = {"f1": "F1", "iou": "IoU", "precision": "precision", "recall": "recall"}
    lines += _table(rows, [(k, labels[k], ".3f") for k in MASK_KEYS], head="image segmented")
    fd_note = meth["model"]["whole"].get("fd_demgen_rand_note")
    notes = [*r["notes"].values(), fd_note and f"FD (demgen rand) not computed: {fd_note}"]
    notes.append("FD (demgen rand): Fréchet distance on demgen's fixed random features over "
                 f"{r['fd_pairs']} pairs usable everywhere; not Inception FID.")  # fmt: skip
    lines += ["", "Notes:", "", *[f"- {n}" for n in notes if n]]
    return "\n".join(lines) + "\n"


def temporal_summary_line(r: dict[str, Any]) -> str:
    """``model: PSNR 23.45 dB, new buildings 18.20 dB, F1 0.712 | persistence: ...``."""
    parts = []
    for name in TEMPORAL_METHODS:
        m = r["methods"][name]
        parts.append(f"{TEMPORAL_TITLES[name]}: PSNR {_num(m['whole']['psnr_db'], '.2f')} dB, "
                     f"new buildings {_num(m['changed']['psnr_db'], '.2f')} dB, "
                     f"F1 {_num(m['f1'], '.3f')}")  # fmt: skip
    parts.append(f"true image: F1 {_num(r['true_image']['f1'], '.3f')}")
    return " | ".join(parts)


__all__ = ["MASK_KEYS", "TEMPORAL_METHODS", "TEMPORAL_TITLES", "THRESHOLD",
           "render_temporal_report", "temporal_figure", "temporal_summary_line"]  # fmt: skip
