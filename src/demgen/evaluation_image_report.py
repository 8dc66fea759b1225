"""The report of an image evaluation (:mod:`demgen.evaluation_image`): ``report.md``
(overall and per-band tables), ``figure.png`` (colour composites of prediction and
reference, per-pixel mean |error| over bands and spectral angle) and the summary line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from demgen.evaluation_grid import fmt_value
from demgen.io.raster import atomic_path, true_colour_indices
from demgen.metrics.image import _spectral_angles_deg

FIGURE_SIDE = 1024  # the figure shows every k-th pixel, k = ceil(longest side / this)

_OVERALL = (
    ("PSNR", "psnr_db", "dB"), ("SSIM", "ssim", ""), ("MS-SSIM", "ms_ssim", ""),
    ("SAM", "sam_deg", "deg"), ("ERGAS", "ergas", ""), ("RMSE", "rmse", "file units"),
    ("MAE", "mae", "file units"), ("fd_demgen_rand", "fd_demgen_rand", ""),
    ("FID (feature net)", "fid_torchscript", ""), ("KID (feature net)", "kid_torchscript", ""),
    ("LPIPS (feature net)", "lpips_torchscript", ""),
)  # fmt: skip


def render_image_markdown(m: dict[str, Any]) -> str:
    """A Markdown summary of :func:`evaluate_image`'s result (or of its metrics.json)."""
    how = m.get("prediction_resampling", "none")
    how = "is on the same grid" if how == "none" else f"was resampled onto it ({how})"
    h, w = m.get("shape", ("?", "?"))
    lines = [
        f"# Image evaluation: `{Path(m['prediction']).name}` vs `{Path(m['reference']).name}`",
        "",
        f"{m['n_pixels']:,} of {h} x {w} pixels valid in both; bands {', '.join(m['bands'])} "
        f"matched by {m['band_matching']}; the prediction {how}. Data range "
        f"L = {m['data_range']:g} ({m['data_range_rule']}): PSNR's peak and SSIM's constants.",
        "",
        f"`fd_demgen_rand`: Fréchet distance of demgen's fixed random-feature net over "
        f"{m['fd_chips']} pairs of complete {m['fd_chip']} px chips; not Inception FID, "
        "compare it only with itself on equal chip counts.",
    ]
    lines += (
        ["", *(f"**Warning:** {x}" for x in m.get("warnings", []))] if m.get("warnings") else []
    )
    notes = [m[k] for k in ("ms_ssim_note", "fd_note", "lpips_note") if m.get(k)]
    lines += ["", *(f"Note: {x}." for x in notes)] if notes else []
    lines += ["", "| metric | value | unit |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {fmt_value(m[k])} | {unit} |" for name, k, unit in _OVERALL if k in m]
    lines += ["", "| band | PSNR (dB) | SSIM | MS-SSIM | RMSE | MAE | ERGAS |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, b in m["per_band"].items():
        vals = (b["psnr_db"], b["ssim"], b["ms_ssim"], b["rmse"], b["mae"], b["ergas"])
        lines.append(f"| {name} | " + " | ".join(fmt_value(v) for v in vals) + " |")
    return "\n".join(lines) + "\n"


def image_figure(path: str | Path, pair: Any, *, title: str = "") -> Path:
    """Prediction and reference as colour composites (one 2-98 % stretch, the
    reference's), the mean |error| over bands and the spectral angle, per pixel, of an
    :class:`demgen.evaluation_image_windows.ImageView` (every k-th pixel, gathered while
    the images are read in strips) or a whole :class:`demgen.evaluation_image.ImagePair`
    (shown every k-th pixel): anything with ``prediction``, ``reference``, ``valid``,
    ``bands`` and ``data_range``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(1, math.ceil(max(pair.valid.shape) / FIGURE_SIDE))  # 1 for an ImageView
    ok = pair.valid[::k, ::k]
    p = np.where(ok, pair.prediction[:, ::k, ::k], np.nan)
    r = np.where(ok, pair.reference[:, ::k, ::k], np.nan)
    idx = true_colour_indices(pair.bands)
    lo, hi = np.nanpercentile(r[idx], (2, 98))
    rgb = [np.clip((np.moveaxis(a[idx], 0, -1) - lo) / max(hi - lo, 1e-12), 0, 1) for a in (p, r)]
    mae = np.abs(p - r).mean(axis=0)  # NaN off the valid pixels
    panels = [(rgb[0], "Prediction"), (rgb[1], "Reference"), (mae, "Mean |error| over bands")]
    if len(pair.bands) > 1:
        sam = np.full(ok.shape, np.nan)
        sam[ok] = _spectral_angles_deg(p[:, ok], r[:, ok])
        panels.append((sam, "Spectral angle"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8), layout="constrained")
    for ax, (a, name) in zip(axes, panels, strict=True):
        if a.ndim == 3:
            ax.imshow(np.where(np.isfinite(a), a, 1.0))  # invalid pixels white
        else:
            im = ax.imshow(a, cmap="magma", vmin=0)
            unit = "deg" if name == "Spectral angle" else f"file units (L = {pair.data_range:g})"
            fig.colorbar(im, ax=ax, shrink=0.8, label=unit)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)


def summary(m: dict[str, Any]) -> str:
    """The one-line summary: PSNR, SSIM, SAM, ERGAS and fd_demgen_rand."""
    return (
        f"PSNR {fmt_value(m['psnr_db'], '.2f')} dB | SSIM {fmt_value(m['ssim'])} | "
        f"SAM {fmt_value(m['sam_deg'], '.2f')} deg | ERGAS {fmt_value(m['ergas'], '.2f')} | "
        f"fd_demgen_rand {fmt_value(m['fd_demgen_rand'], '.2f')} over {m['n_pixels']:,} pixels"
    )
