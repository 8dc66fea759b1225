"""Evaluate a predicted DEM against a reference DEM, in metres, on pixels valid in both.

The prediction is reprojected onto the reference grid (bilinear) when the grids
differ; an optional mask and land-cover raster are aligned with nearest
neighbour. Metrics and their formulas live in :mod:`demgen.metrics.dem`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.coords import disjoint_bounds
from rasterio.warp import Resampling, reproject, transform_bounds

from demgen.errors import InputError
from demgen.io.raster import open_raster, write_text_atomic
from demgen.metrics.dem import error_stats, image_stats, masked_ssim, terrain_stats, valid_pixels
from demgen.viz.hillshade import hillshade


def _read_on_grid(path: str | Path, ref: dict[str, Any], resampling: Resampling) -> np.ndarray:
    """Band 1 of ``path`` on the reference grid as float64, nodata -> NaN."""
    with open_raster(path) as ds:
        if ds.crs is None:
            raise InputError(f"{path}: raster has no CRS (georeferencing is required)")
        bounds = transform_bounds(ds.crs, ref["crs"], *ds.bounds)
        if disjoint_bounds(bounds, ref["bounds"]):
            raise InputError(f"{path}: does not overlap the reference {ref['path']}")
        src = ds.read(1).astype(np.float64)
        if ds.nodata is not None:
            src[src == ds.nodata] = np.nan
        same = (
            ds.crs == ref["crs"]
            and ds.transform.almost_equals(ref["transform"])
            and ds.shape == ref["shape"]
        )
        if same:
            return src
        out = np.full(ref["shape"], np.nan)
        reproject(
            src, out, src_transform=ds.transform, src_crs=ds.crs, src_nodata=np.nan,
            dst_transform=ref["transform"], dst_crs=ref["crs"], dst_nodata=np.nan,
            resampling=resampling,
        )  # fmt: skip
        return out


@dataclass
class DemPair:
    """A prediction on the reference's grid, the reference, and the pixels valid in both."""

    prediction: np.ndarray
    reference: np.ndarray
    valid: np.ndarray
    pixel_size: tuple[float, float]
    grid: dict[str, Any]


def load_pair(
    prediction: str | Path, reference: str | Path, *, mask: str | Path | None = None
) -> DemPair:
    """Read the reference, bring the prediction (and mask) onto its grid, find valid pixels."""
    with open_raster(reference) as ds:
        if ds.crs is None:
            raise InputError(f"{reference}: raster has no CRS (georeferencing is required)")
        grid = {
            "path": str(reference), "crs": ds.crs, "transform": ds.transform,
            "shape": ds.shape, "bounds": tuple(ds.bounds),
        }  # fmt: skip
        ref = ds.read(1).astype(np.float64)
        if ds.nodata is not None:
            ref[ref == ds.nodata] = np.nan
        pixel = (abs(ds.transform.a), abs(ds.transform.e))
    pred = _read_on_grid(prediction, grid, Resampling.bilinear)
    keep = None
    if mask is not None:
        m = _read_on_grid(mask, grid, Resampling.nearest)
        keep = np.isfinite(m) & (m != 0)
    ok = valid_pixels(pred, ref, keep)
    if not ok.any():
        raise InputError(f"{prediction}: no pixel is valid in both it and {reference}")
    return DemPair(pred, ref, ok, pixel, grid)


def pair_metrics(pair: DemPair) -> dict[str, Any]:
    """Every metric of :mod:`demgen.metrics.dem` for a loaded pair."""
    pred, ref, ok, pixel = pair.prediction, pair.reference, pair.valid, pair.pixel_size
    result: dict[str, Any] = error_stats(pred, ref, ok)
    result |= terrain_stats(pred, ref, pixel, ok)
    result |= image_stats(pred, ref, ok)
    hs_p = hillshade(np.where(ok, pred, np.nan), pixel)
    hs_r = hillshade(np.where(ok, ref, np.nan), pixel)
    hs_ok = ok & np.isfinite(hs_p) & np.isfinite(hs_r)
    result["hillshade_ssim"] = masked_ssim(hs_p, hs_r, hs_ok, (0.0, 1.0))
    result["pixel_size_m"] = list(pixel)
    return result


def evaluate_dem(
    prediction: str | Path,
    reference: str | Path,
    *,
    mask: str | Path | None = None,
    landcover: str | Path | None = None,
) -> dict[str, Any]:
    """All DEM metrics of ``prediction`` against ``reference`` (see module docstring)."""
    return _evaluate(load_pair(prediction, reference, mask=mask), prediction, reference, landcover)


def _evaluate(pair: DemPair, prediction, reference, landcover) -> dict[str, Any]:
    result = pair_metrics(pair)
    result["prediction"], result["reference"] = str(prediction), str(reference)
    if landcover is not None:
        result["per_class"] = _per_class(pair, landcover)
    return result


def _per_class(pair: DemPair, landcover: str | Path) -> dict[str, dict[str, float]]:
    """error_stats per land-cover class (class names from the raster's ``classes`` tag)."""
    pred, ref, ok = pair.prediction, pair.reference, pair.valid
    lc = _read_on_grid(landcover, pair.grid, Resampling.nearest)
    with open_raster(landcover) as ds:
        names = json.loads(ds.tags().get("classes", "{}"))
    out = {}
    for code in np.unique(lc[ok & np.isfinite(lc)]).astype(int):
        sel = ok & (lc == code)
        out[names.get(str(code), str(code))] = error_stats(pred, ref, sel)
    return out


def render_markdown(m: dict[str, Any]) -> str:
    """A Markdown summary of :func:`evaluate_dem`'s result."""
    rows = [
        ("bias (mean error)", m["bias_m"], "m"), ("MAE", m["mae_m"], "m"),
        ("RMSE", m["rmse_m"], "m"), ("NMAD", m["nmad_m"], "m"), ("LE90", m["le90_m"], "m"),
        ("R2", m["r2"], ""), ("SSIM (height)", m["ssim"], ""), ("PSNR", m["psnr_db"], "dB"),
        ("slope RMSE", m["slope_rmse_deg"], "deg"),
        ("aspect MAE (slope > 5 deg)", m["aspect_mae_deg"], "deg"),
        ("hillshade SSIM", m["hillshade_ssim"], ""),
    ]  # fmt: skip
    lines = [
        f"# DEM evaluation: `{Path(m['prediction']).name}` vs `{Path(m['reference']).name}`",
        "",
        f"{m['n_pixels']:,} pixels valid in both; errors are prediction - reference.",
        "",
        "| metric | value | unit |",
        "| --- | ---: | --- |",
        *(f"| {name} | {value:.3f} | {unit} |" for name, value, unit in rows),
    ]
    if "per_class" in m:
        lines += ["", "| land cover | pixels | bias (m) | MAE (m) | RMSE (m) | NMAD (m) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for name, s in m["per_class"].items():
            lines.append(
                f"| {name} | {s['n_pixels']:,} | {s['bias_m']:+.2f} | {s['mae_m']:.2f} | "
                f"{s['rmse_m']:.2f} | {s['nmad_m']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def write_evaluation(m: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``metrics.json`` and ``report.md`` into ``out_dir`` (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_text_atomic(out_dir / "metrics.json", json.dumps(m, indent=2) + "\n"),
        write_text_atomic(out_dir / "report.md", render_markdown(m)),
    ]


def evaluate_to_folder(
    prediction: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    *,
    mask: str | Path | None = None,
    landcover: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate and write ``metrics.json``, ``report.md`` and ``figure.png`` into ``out_dir``."""
    from demgen.viz.figures import evaluation_figure

    pair = load_pair(prediction, reference, mask=mask)
    m = _evaluate(pair, prediction, reference, landcover)
    write_evaluation(m, out_dir)
    shown = np.where(pair.valid, pair.prediction, np.nan)
    evaluation_figure(
        Path(out_dir) / "figure.png", shown, np.where(pair.valid, pair.reference, np.nan),
        pair.pixel_size,
        title=f"{Path(prediction).name}: MAE {m['mae_m']:.2f} m, NMAD {m['nmad_m']:.2f} m",
    )  # fmt: skip
    return m
