"""Evaluate a predicted DEM against a reference DEM, in metres, on pixels valid in both.

The reference fixes the grid; the prediction comes onto it unchanged when the grids
match, else through a warp (average when its pixels are 1.5x finer or more, bilinear
otherwise); a mask and a land-cover raster are aligned with nearest neighbour (see
:mod:`demgen.evaluation_grid`). Slopes, aspects and hillshades use the pixel size in
metres on every CRS, geographic included (:mod:`demgen.io.geodesy`). With
``coregister=True`` the horizontal and vertical shift of the prediction is found first
(Nuth & Kääb, 2011: :mod:`demgen.metrics.coregister`) and removed before the metrics.
Two images (reflectance, not heights) go to :mod:`demgen.evaluation_image` instead.

Both rasters are read in strips of ``window_rows`` rows (:mod:`demgen.evaluation_windows`),
so memory stays bounded for any raster size. Metrics and their formulas live in
:mod:`demgen.metrics.dem`. ``metrics.json`` is strict JSON: non-finite values are null.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from demgen.errors import InputError
from demgen.evaluation_grid import (  # check_out_dir: importable from here as before
    GDAL_CACHE_BYTES,
    OnGrid,
    RefGrid,
    check_out_dir,
    reference_grid,
)
from demgen.evaluation_grid import fmt_value as _fmt
from demgen.evaluation_windows import WINDOW_ROWS, Inputs, estimate_shift, evaluate_windows
from demgen.io.geodesy import UNKNOWN_DATUM
from demgen.io.jsonio import write_json
from demgen.io.raster import write_text_atomic
from demgen.metrics.coregister import Shift
from demgen.metrics.dem import error_stats, image_stats, masked_ssim, terrain_stats
from demgen.viz.hillshade import hillshade

OUTPUTS = ("metrics.json", "report.md", "figure.png")


@contextlib.contextmanager
def open_inputs(
    prediction: str | Path,
    reference: str | Path,
    *,
    mask: str | Path | None = None,
    landcover: str | Path | None = None,
    shift: Shift | None = None,
) -> Iterator[Inputs]:
    """The readers of an evaluation on the reference's grid (prediction shifted by ``shift``)."""
    grid = reference_grid(reference)
    with contextlib.ExitStack() as stack:
        # GDAL's block cache defaults to 5 % of the machine's memory: bound it
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES))
        ref = stack.enter_context(OnGrid(reference, grid))
        m = stack.enter_context(OnGrid(mask, grid, categorical=True)) if mask else None
        lc = stack.enter_context(OnGrid(landcover, grid, categorical=True)) if landcover else None
        moved = {"shift": (shift.cols, shift.rows), "dz": shift.dz_m} if shift else {}
        pred = stack.enter_context(OnGrid(prediction, grid, **moved))
        yield Inputs(grid, pred, ref, m, lc)


@dataclass
class DemPair:
    """A prediction on the reference's grid, the reference, and the pixels valid in both."""

    prediction: np.ndarray
    reference: np.ndarray
    valid: np.ndarray
    pixel_size: tuple[float, float]  # metres, at the grid's centre
    grid: RefGrid


def load_pair(
    prediction: str | Path,
    reference: str | Path,
    *,
    mask: str | Path | None = None,
    shift: Shift | None = None,
) -> DemPair:
    """Both rasters whole on the reference grid (for notebooks and small rasters)."""
    with open_inputs(prediction, reference, mask=mask, shift=shift) as inputs:
        p, r, ok = inputs.valid(0, inputs.grid.height)
    if not ok.any():
        raise InputError(f"{prediction}: no pixel is valid in both it and {reference}")
    return DemPair(p, r, ok, inputs.grid.pixel_size_m, inputs.grid)


def pair_metrics(pair: DemPair) -> dict[str, Any]:
    """Every metric of :mod:`demgen.metrics.dem` for a loaded pair, on whole arrays."""
    pred, ref, ok = pair.prediction, pair.reference, pair.valid
    sizes = pair.grid.row_pixel_sizes(0, pair.grid.height)
    result: dict[str, Any] = error_stats(pred, ref, ok)
    result |= terrain_stats(pred, ref, sizes, ok)
    result |= image_stats(pred, ref, ok)
    hs_p = hillshade(np.where(ok, pred, np.nan), sizes)
    hs_r = hillshade(np.where(ok, ref, np.nan), sizes)
    hs_ok = ok & np.isfinite(hs_p) & np.isfinite(hs_r)
    result["hillshade_ssim"] = masked_ssim(hs_p, hs_r, hs_ok, 1.0)
    result["height_range_m"] = [float(ref[ok].min()), float(ref[ok].max())]
    result["pixel_size_m"] = list(pair.pixel_size)
    return result


def datum_warnings(prediction: str, reference: str) -> list[str]:
    """A warning when both rasters declare a vertical datum and the two differ."""
    known = UNKNOWN_DATUM not in (prediction, reference)
    if known and prediction.strip().casefold() != reference.strip().casefold():
        return [
            f"the prediction's heights are in '{prediction}' but the reference's in "
            f"'{reference}': the errors include the difference between the two datums "
            "(up to ~100 m between a geoid and the ellipsoid, decimetres to metres between "
            "two geoid models); convert one first"
        ]
    return []


def _evaluate(prediction, reference, mask, landcover, coregister, window_rows, figure):
    with open_inputs(prediction, reference, mask=mask, landcover=landcover) as inputs:
        vertical = {"prediction": inputs.pred.vertical_crs, "reference": inputs.ref.vertical_crs}
        warnings = datum_warnings(vertical["prediction"], vertical["reference"])
        shift = estimate_shift(inputs) if coregister else None
        names = json.loads(inputs.landcover.tags.get("classes", "{}")) if landcover else None
    with open_inputs(prediction, reference, mask=mask, landcover=landcover, shift=shift) as inputs:
        stats, dec = evaluate_windows(
            inputs, window_rows=window_rows, figure=figure, class_names=names
        )
        resampling = inputs.pred.resampling
    per_class = stats.pop("per_class", None)
    m: dict[str, Any] = stats | {
        "pixel_size_m": list(inputs.grid.pixel_size_m),
        "prediction": str(prediction),
        "reference": str(reference),
        "vertical_crs": vertical,
        "prediction_resampling": resampling,
    }
    if shift is not None:
        m["coregistration"] = shift.as_dict()
        if not shift.converged:
            warnings.append(
                f"co-registration did not converge in {shift.iterations} iterations: "
                "the shift reported is the last estimate"
            )
    m["warnings"] = warnings
    if per_class is not None:
        m["per_class"] = per_class
    return m, dec


def evaluate_dem(
    prediction: str | Path,
    reference: str | Path,
    *,
    mask: str | Path | None = None,
    landcover: str | Path | None = None,
    coregister: bool = False,
    window_rows: int = WINDOW_ROWS,
) -> dict[str, Any]:
    """All DEM metrics of ``prediction`` against ``reference`` (see module docstring)."""
    return _evaluate(prediction, reference, mask, landcover, coregister, window_rows, False)[0]


def render_markdown(m: dict[str, Any]) -> str:
    """A Markdown summary of :func:`evaluate_dem`'s result (or of a loaded metrics.json)."""
    rows = [
        ("bias (mean error)", m["bias_m"], "m"), ("MAE", m["mae_m"], "m"),
        ("RMSE", m["rmse_m"], "m"), ("NMAD", m["nmad_m"], "m"), ("LE90", m["le90_m"], "m"),
        ("R2", m["r2"], ""), ("SSIM (height)", m["ssim"], ""), ("PSNR", m["psnr_db"], "dB"),
        ("slope RMSE", m["slope_rmse_deg"], "deg"),
        ("mean slope, reference", m.get("slope_mean_ref_deg"), "deg"),
        ("mean slope, prediction", m.get("slope_mean_pred_deg"), "deg"),
        ("aspect MAE (slope > 5 deg)", m["aspect_mae_deg"], "deg"),
        ("hillshade SSIM", m["hillshade_ssim"], ""),
    ]  # fmt: skip
    px = m.get("pixel_size_m") or [float("nan")] * 2
    how = m.get("prediction_resampling", "none")
    how = "is on the same grid" if how == "none" else f"was resampled onto it ({how})"
    lines = [
        f"# DEM evaluation: `{Path(m['prediction']).name}` vs `{Path(m['reference']).name}`",
        "",
        f"{m['n_pixels']:,} pixels valid in both; errors are prediction - reference. "
        f"Reference pixel {_fmt(px[0], '.2f')} x {_fmt(px[1], '.2f')} m; the prediction "
        f"{how}.",
    ]
    if "vertical_crs" in m:
        v = m["vertical_crs"]
        lines += ["", f"Vertical datum: prediction `{v['prediction']}`, "
                      f"reference `{v['reference']}`."]  # fmt: skip
    c = m.get("coregistration")
    if c:
        lines += [
            "",
            f"Co-registered (Nuth & Kääb, 2011) before the metrics: the prediction was shifted "
            f"by dx = {_fmt(c['dx_m'], '+.2f')} m ({_fmt(c['dx_px'], '+.3f')} px, east), "
            f"dy = {_fmt(c['dy_m'], '+.2f')} m ({_fmt(c['dy_px'], '+.3f')} px, north) and "
            f"dz = {_fmt(c['dz_m'], '+.2f')} m, found in {c['iterations']} iterations "
            f"over {c['n_pixels']:,} stable pixels (NMAD {_fmt(c['nmad_before_m'], '.2f')} m "
            f"before, {_fmt(c['nmad_after_m'], '.2f')} m after); the metrics below are after "
            "removing it.",
        ]
    for w in m.get("warnings", []):
        lines += ["", f"**Warning:** {w}"]
    lines += [
        "",
        "| metric | value | unit |",
        "| --- | ---: | --- |",
        *(f"| {name} | {_fmt(value)} | {unit} |" for name, value, unit in rows),
    ]
    if "per_class" in m:
        lines += ["", "| land cover | pixels | bias (m) | MAE (m) | RMSE (m) | NMAD (m) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for name, s in m["per_class"].items():
            lines.append(
                f"| {name} | {s['n_pixels']:,} | {_fmt(s['bias_m'], '+.2f')} | "
                f"{_fmt(s['mae_m'], '.2f')} | {_fmt(s['rmse_m'], '.2f')} | "
                f"{_fmt(s['nmad_m'], '.2f')} |"
            )
    return "\n".join(lines) + "\n"


def write_evaluation(m: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``metrics.json`` (strict JSON) and ``report.md`` into ``out_dir`` (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_json(out_dir / "metrics.json", m),
        write_text_atomic(out_dir / "report.md", render_markdown(m)),
    ]


def evaluate_to_folder(
    prediction: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    *,
    mask: str | Path | None = None,
    landcover: str | Path | None = None,
    coregister: bool = False,
    window_rows: int = WINDOW_ROWS,
    overwrite: bool = False,
    kind: str = "auto",
    **image_options: Any,
) -> dict[str, Any]:
    """Evaluate and write ``metrics.json``, ``report.md`` and ``figure.png`` into ``out_dir``
    (refused when ``out_dir`` holds anything and ``overwrite`` is false).

    ``kind`` ("auto", "dem" or "image"; :func:`demgen.evaluation_image.resolve_kind`): two
    images go to :func:`demgen.evaluation_image.evaluate_image_to_folder` with ``mask``,
    ``window_rows`` and ``image_options`` (``data_range``, ``feature_net``, ``fd_chip``);
    two DEMs stay here.
    """
    from demgen.evaluation_image import evaluate_image_to_folder, resolve_kind
    from demgen.viz.figures import evaluation_figure

    out_dir = check_out_dir(out_dir, overwrite)
    if resolve_kind(prediction, reference, kind) == "image":
        if landcover is not None or coregister:
            raise InputError("--landcover and --coregister are for DEMs, not for images")
        return evaluate_image_to_folder(
            prediction, reference, out_dir, mask=mask, overwrite=overwrite,
            window_rows=window_rows, **image_options,
        )  # fmt: skip
    if image_options:
        raise InputError(
            f"{', '.join(image_options)}: options for images, but {prediction} and "
            f"{reference} are DEMs"
        )
    m, dec = _evaluate(prediction, reference, mask, landcover, coregister, window_rows, True)
    write_evaluation(m, out_dir)
    pred, ref = dec.arrays()
    px, py = m["pixel_size_m"]
    evaluation_figure(
        out_dir / "figure.png", pred, ref, (px * dec.factor, py * dec.factor),
        title=f"{Path(prediction).name}: MAE {m['mae_m']:.2f} m, NMAD {m['nmad_m']:.2f} m",
    )  # fmt: skip
    return m
