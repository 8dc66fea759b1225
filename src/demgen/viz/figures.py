"""PNG figures with titles, units and colour bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from demgen.io.raster import atomic_path  # noqa: E402
from demgen.viz.hillshade import hillshade  # noqa: E402


def rgb_composite(image: np.ndarray, bands: list[str], rgb=("B4", "B3", "B2")) -> np.ndarray:
    """A 2-98 % stretched true-colour composite (H, W, 3) in [0, 1]."""
    idx = [bands.index(b) for b in rgb] if all(b in bands for b in rgb) else [2, 1, 0]
    out = np.stack([image[i].astype(np.float32) for i in idx], axis=-1)
    lo, hi = np.nanpercentile(out, 2), np.nanpercentile(out, 98)
    return np.clip((out - lo) / max(hi - lo, 1e-6), 0, 1)


def comparison_figure(
    path: str | Path,
    *,
    image: np.ndarray,
    bands: list[str],
    truth: np.ndarray,
    prediction: np.ndarray,
    pixel_size: tuple[float, float],
    title: str = "",
) -> Path:
    """Image | true hillshade | predicted hillshade | error map (metres, diverging at 0)."""
    err = prediction - truth
    lim = float(np.nanpercentile(np.abs(err), 99)) or 1.0
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.8), constrained_layout=True)
    axes[0].imshow(rgb_composite(image, bands))
    axes[0].set_title("Image (true colour)")
    for ax, dem, name in ((axes[1], truth, "True DTM"), (axes[2], prediction, "Predicted DTM")):
        ax.imshow(hillshade(dem, pixel_size), cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(
            dem, cmap="terrain", alpha=0.45, vmin=np.nanmin(truth), vmax=np.nanmax(truth)
        )
        ax.set_title(f"{name} (hillshade + height)")
        fig.colorbar(im, ax=ax, shrink=0.8, label="height (m)")
    im = axes[3].imshow(err, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim))
    axes[3].set_title("Error: predicted - true")
    fig.colorbar(im, ax=axes[3], shrink=0.8, label="error (m)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)
