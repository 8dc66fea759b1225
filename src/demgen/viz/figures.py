"""PNG figures with titles, units and colour bars.

Hillshade (sun azimuth and altitude as parameters, true slopes from the pixel size
in metres), colour relief, side-by-side DEMs on one height scale, error maps with a
diverging colormap centred on 0, and learning curves from Lightning's CSV logs.
Every function writes its PNG atomically and returns the path.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap, TwoSlopeNorm  # noqa: E402

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


# matplotlib's "terrain" without its sea-blue lower quarter: land from green to white.
RELIEF = LinearSegmentedColormap.from_list(
    "demgen_relief", plt.get_cmap("terrain")(np.linspace(0.25, 1.0, 256))
)
ERROR_CMAP = "RdBu_r"


def _save(fig, path: str | Path, dpi: int = 100) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _extent_km(shape: tuple[int, int], pixel_size: tuple[float, float]):
    h, w = shape
    return [0, w * abs(pixel_size[0]) / 1000, h * abs(pixel_size[1]) / 1000, 0]


def _pair(pixel_size) -> tuple[float, float]:
    return (pixel_size, pixel_size) if np.isscalar(pixel_size) else tuple(pixel_size)


def draw_relief(
    ax, dem, pixel_size, *, vmin=None, vmax=None, azimuth=315.0, altitude=45.0, shade=True
):
    """Colour relief (optionally over a hillshade) on ``ax``; returns the image for a colour bar."""
    px = _pair(pixel_size)
    ext = _extent_km(dem.shape, px)
    vmin = float(np.nanmin(dem)) if vmin is None else vmin
    vmax = float(np.nanmax(dem)) if vmax is None else vmax
    if shade:
        ax.imshow(hillshade(dem, px, azimuth, altitude), cmap="gray", vmin=0, vmax=1, extent=ext)
    im = ax.imshow(dem, cmap=RELIEF, vmin=vmin, vmax=vmax, alpha=0.6 if shade else 1.0, extent=ext)
    ax.set_xlabel("x (km)")
    ax.set_ylabel("y (km)")
    return im


def hillshade_figure(
    path: str | Path,
    dem: np.ndarray,
    pixel_size: float | tuple[float, float],
    *,
    azimuth: float = 315.0,
    altitude: float = 45.0,
    title: str = "Hillshade",
) -> Path:
    """Grey hillshade of ``dem`` (metres) lit from ``azimuth``/``altitude`` (degrees)."""
    px = _pair(pixel_size)
    fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    im = ax.imshow(
        hillshade(dem, px, azimuth, altitude),
        cmap="gray",
        vmin=0,
        vmax=1,
        extent=_extent_km(dem.shape, px),
    )
    ax.set_title(f"{title}\nsun azimuth {azimuth:g}\u00b0, altitude {altitude:g}\u00b0")
    ax.set_xlabel("x (km)")
    ax.set_ylabel("y (km)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="illumination (0-1)")
    return _save(fig, path)


def colour_relief(
    path: str | Path,
    dem: np.ndarray,
    pixel_size: float | tuple[float, float],
    *,
    title: str = "Colour relief",
    shade: bool = True,
) -> Path:
    """Heights in colour (over a hillshade when ``shade``) with a colour bar in metres."""
    fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    im = draw_relief(ax, dem, pixel_size, shade=shade)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="height (m)")
    return _save(fig, path)


def side_by_side(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray]],
    pixel_size: float | tuple[float, float],
    *,
    title: str = "",
) -> Path:
    """DEMs next to each other on one shared height scale (metres), shaded relief."""
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    vmin = min(float(np.nanmin(d)) for _, d in panels)
    vmax = max(float(np.nanmax(d)) for _, d in panels)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels) + 1, 5), constrained_layout=True, squeeze=False
    )
    im = None
    for ax, (name, dem) in zip(axes[0], panels, strict=True):
        im = draw_relief(ax, dem, pixel_size, vmin=vmin, vmax=vmax)
        ax.set_title(name)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="height (m)")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def error_limit(error: np.ndarray, pct: float = 99.0) -> float:
    """Symmetric colour limit: the ``pct`` percentile of |error| (1 when all zero)."""
    finite = np.abs(error[np.isfinite(error)])
    return float(np.percentile(finite, pct)) if finite.size and finite.max() > 0 else 1.0


def draw_error(ax, error: np.ndarray, pixel_size=None):
    """Error map on ``ax``: diverging colours centred on 0 m; returns the image."""
    lim = error_limit(error)
    ext = _extent_km(error.shape, _pair(pixel_size)) if pixel_size is not None else None
    im = ax.imshow(error, cmap=ERROR_CMAP, norm=TwoSlopeNorm(0.0, -lim, lim), extent=ext)
    return im


def error_map(
    path: str | Path,
    prediction: np.ndarray,
    truth: np.ndarray,
    pixel_size: float | tuple[float, float] | None = None,
    *,
    title: str = "Error: predicted - true",
) -> Path:
    """Map of ``prediction - truth`` in metres, blue below / red above, white at 0."""
    err = np.asarray(prediction, np.float64) - np.asarray(truth, np.float64)
    fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    im = draw_error(ax, err, pixel_size)
    finite = err[np.isfinite(err)]
    if finite.size:
        mae = float(np.abs(finite).mean())
        rmse = float(np.sqrt((finite**2).mean()))
        title = f"{title}\nMAE {mae:.2f} m, RMSE {rmse:.2f} m, bias {finite.mean():+.2f} m"
    ax.set_title(title)
    if pixel_size is not None:
        ax.set_xlabel("x (km)")
        ax.set_ylabel("y (km)")
    else:
        _no_ticks(ax)
    fig.colorbar(im, ax=ax, shrink=0.8, label="error (m)")
    return _save(fig, path)


def read_metrics_csv(csv_path: str | Path) -> dict[str, list[tuple[float, float, float]]]:
    """Lightning CSVLogger ``metrics.csv`` as {column: [(step, epoch, value)]}; blanks skipped."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            step = float(row["step"]) if row.get("step") not in (None, "") else np.nan
            epoch = float(row["epoch"]) if row.get("epoch") not in (None, "") else np.nan
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                try:
                    series.setdefault(key, []).append((step, epoch, float(value)))
                except ValueError:
                    continue
    return series


def learning_curves(csv_path: str | Path, out_png: str | Path, *, title: str = "") -> Path:
    """Training loss against step and validation errors (metres) against epoch."""
    series = read_metrics_csv(csv_path)
    if not series:
        raise ValueError(f"{csv_path}: no metrics to plot")
    loss_keys = sorted(k for k in series if "loss" in k)
    metre_keys = sorted(k for k in series if k.startswith("val") and k.endswith("_m"))
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for key in loss_keys:
        pts = np.array(series[key])
        sparse = len(pts) < 20
        ax_l.plot(pts[:, 0], pts[:, 2], marker="o" if sparse else None, ms=3, label=key)
    ax_l.set_title("Loss")
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("loss (normalized units)")
    if any(v[2] > 0 for k in loss_keys for v in series[k]):
        ax_l.set_yscale("log")
    for key in metre_keys:
        pts = np.array(series[key])
        ax_m.plot(pts[:, 1], pts[:, 2], marker="o", ms=3, label=key)
    if metre_keys and any("bias" in k for k in metre_keys):
        ax_m.axhline(0.0, color="0.6", lw=0.8)
    ax_m.set_title("Validation error")
    ax_m.set_xlabel("epoch")
    ax_m.set_ylabel("metres")
    for ax in (ax_l, ax_m):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title or f"Learning curves ({Path(csv_path).parent.name or csv_path})")
    return _save(fig, out_png)


def evaluation_figure(
    path: str | Path,
    prediction: np.ndarray,
    reference: np.ndarray,
    pixel_size: float | tuple[float, float],
    *,
    title: str = "",
) -> Path:
    """Predicted and reference relief side by side, the error map and the error histogram."""
    px = _pair(pixel_size)
    err = prediction - reference
    finite = err[np.isfinite(err)]
    vmin, vmax = float(np.nanmin(reference)), float(np.nanmax(reference))
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8), constrained_layout=True)
    for ax, dem, name in ((axes[0], prediction, "Prediction"), (axes[1], reference, "Reference")):
        im = draw_relief(ax, dem, px, vmin=vmin, vmax=vmax)
        ax.set_title(f"{name} (hillshade + height)")
        fig.colorbar(im, ax=ax, shrink=0.8, label="height (m)")
    im = draw_error(axes[2], err, px)
    axes[2].set_title("Error: prediction - reference")
    axes[2].set_xlabel("x (km)")
    fig.colorbar(im, ax=axes[2], shrink=0.8, label="error (m)")
    lim = error_limit(err, 99.5)
    axes[3].hist(np.clip(finite, -lim, lim), bins=80, color="0.35")
    axes[3].axvline(0.0, color="k", lw=0.8)
    axes[3].axvline(float(finite.mean()), color="tab:red", lw=1.2, label="bias")
    axes[3].set_xlabel("error (m)")
    axes[3].set_ylabel("pixels")
    axes[3].set_title("Error histogram")
    axes[3].legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=80)
