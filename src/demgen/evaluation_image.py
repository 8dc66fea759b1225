"""Evaluate a predicted image against a reference image, on the pixels valid in both.

For models that render imagery (a DEM -> image task's reflectance x 10000 GeoTIFF) scored
against the true image. :func:`is_image_raster` tells an image from a DEM, and
:func:`demgen.evaluate.evaluate_to_folder` sends a pair of images here.

- Grid: the reference fixes it; a prediction on another grid is warped onto it by
  :class:`demgen.evaluation_grid.OnGrid` (:mod:`demgen.io.resampling`'s rule: average
  from 1.5x finer pixels, else bilinear), all bands through one VRT.
- Bands (:func:`match_bands`): by description when every band of both files has one (the
  prediction's reordered to the reference's; ``*_tta_std`` bands of ``demgen predict
  --tta`` ignored), else by position. Alpha bands are masks, not bands.
- Valid pixels: finite in every band of both, outside GDAL's mask (declared nodata, an
  internal mask, an alpha band), not 0 in every band of a uint16 file that declares no
  nodata (Sentinel-2 L2A's no-data), and nonzero in ``mask``.
- Data range: :func:`data_range_of`, one rule per unit, unless given.
- Metrics: those of :func:`demgen.metrics.image.image_metrics` (PSNR, SSIM, MS-SSIM, SAM,
  ERGAS, RMSE, MAE in the files' units, overall and per band) and, on complete valid chips
  (:func:`complete_chips`), :mod:`demgen.metrics.perceptual`: ``fd_demgen_rand`` (a
  Fréchet distance on demgen's fixed random-feature net, *not* Inception FID) and, with a
  user's TorchScript ``feature_net``, FID, KID and LPIPS.
- Report: ``metrics.json``, ``report.md`` and ``figure.png`` (every k-th pixel, at most
  1024 a side; :mod:`demgen.evaluation_image_report`).

Memory: as the DEM path, both images are read in strips of ``window_rows`` rows
(:mod:`demgen.evaluation_image_windows`), with the numbers the whole arrays give: a
10980 x 10980 x 4 uint16 Sentinel-2 tile pair peaks at 1.2 GB resident
(``benchmarks/evaluate_image_memory.json``; whole, it took ~29 GB). :func:`load_image_pair`
still reads both whole (~60 bytes per pixel and band with the metrics' copies).
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp

from demgen.errors import InputError
from demgen.evaluation_grid import GDAL_CACHE_BYTES, OnGrid, RefGrid, check_out_dir
from demgen.evaluation_grid import reference_grid as _reference_grid
from demgen.evaluation_image_report import (
    FIGURE_SIDE,
    image_figure,
    render_image_markdown,
    summary,
)
from demgen.evaluation_image_windows import (
    FD_CHIP,
    FD_MAX_CHIPS,
    WINDOW_ROWS,
    ImageReaders,
    assemble_metrics,
    band_ssim,
    chip_places,
    collect_chips,
    distribution_metrics,
    scan,
)
from demgen.io.jsonio import write_json
from demgen.io.raster import default_band_names, open_raster, write_text_atomic

__all__ = [  # the report's functions are importable from here too
    "evaluate_image", "evaluate_image_to_folder", "image_figure", "is_image_raster",
    "load_image_pair", "render_image_markdown", "resolve_kind", "summary",
]  # fmt: skip

KINDS = ("auto", "dem", "image")
SCALED_MAX = 20000  # integer reflectance x 10000 up to 2.0 (S2's offset, bright clouds)
FLOAT_MAX = 2.0  # float reflectance 0..1, up to 2.0
TTA_SUFFIX = "_tta_std"
_METRE = {"m", "metre", "meter", "metres", "meters"}
_DEM_WORDS = {"dem", "dtm", "dsm", "height", "elevation"}


@dataclass(frozen=True)
class RasterInfo:
    """What :func:`is_image_raster` and :func:`match_bands` read of a raster."""

    path: Path
    bands: tuple[int, ...]  # 1-based, alpha bands left out
    descriptions: tuple[str | None, ...]  # of those bands
    units: tuple[str, ...]
    dtype: np.dtype
    nodata: float | None
    tags: dict[str, str]
    alpha: tuple[int, ...] = ()


def raster_info(path: str | Path) -> RasterInfo:
    with open_raster(path) as ds:
        alpha = tuple(i for i in ds.indexes if ds.colorinterp[i - 1] == ColorInterp.alpha)
        keep = tuple(i for i in ds.indexes if i not in alpha)
        return RasterInfo(
            Path(path), keep, tuple(ds.descriptions[i - 1] for i in keep),
            tuple(ds.units[i - 1] or "" for i in keep), np.dtype(ds.dtypes[0]), ds.nodata,
            ds.tags(), alpha,
        )  # fmt: skip


def is_image_raster(path: str | Path | RasterInfo) -> bool:
    """True when a raster holds an image, False when it holds heights. In this order:

    1. heights: band 1's unit or the ``units`` tag is metres (``m``, ``metre``, ...), or
       band 1's description names heights (``dtm``, ``dsm``, ``dem``, ``height``,
       ``elevation``): a DEM with a ``tta_std`` band stays a DEM;
    2. an image: more than one band (alpha bands not counted);
    3. an image: a band unit, description or the ``units`` tag says ``reflectance``, or
       the file has a ``reflectance_scale`` tag;
    4. heights: any other single-band raster (float or integer), as before images.
    """
    info = path if isinstance(path, RasterInfo) else raster_info(path)
    if not info.bands:  # nothing but an alpha band
        return False
    tag_unit = info.tags.get("units", "").strip().casefold()
    desc = set(re.findall(r"[a-z]+", (info.descriptions[0] or "").casefold()))
    if info.units[0].strip().casefold() in _METRE or tag_unit in _METRE or desc & _DEM_WORDS:
        return False
    if len(info.bands) > 1:
        return True
    said = " ".join([*info.units, tag_unit, *(d or "" for d in info.descriptions)]).casefold()
    return "reflectance" in said or "reflectance_scale" in info.tags


def resolve_kind(prediction: str | Path, reference: str | Path, kind: str = "auto") -> str:
    """``"dem"`` or ``"image"``: ``kind`` itself, or for ``"auto"`` what both rasters are
    (:func:`is_image_raster`); an image against a DEM is refused."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    p, r = is_image_raster(prediction), is_image_raster(reference)
    if p == r:
        return "image" if p else "dem"
    img, dem = (prediction, reference) if p else (reference, prediction)
    raise InputError(f"{img} looks like an image but {dem} like a DEM (pass --kind dem or image)")


def match_bands(pred: RasterInfo, ref: RasterInfo) -> tuple[list[str], list[int], list[int], str]:
    """(names, prediction bands, reference bands, rule): the bands to compare, pairwise, in
    the reference's order; ``rule`` is ``"description"`` or ``"position"``."""
    pd, rd = pred.descriptions, ref.descriptions
    if all(pd) and all(rd):
        if len(set(pd)) < len(pd) or len(set(rd)) < len(rd):
            raise InputError(f"{pred.path} or {ref.path}: two bands share a description")
        extra = [d for d in pd if d not in rd and not d.endswith(TTA_SUFFIX)]
        missing = [d for d in rd if d not in pd]
        if extra or missing:
            raise InputError(
                f"{pred.path}: bands {', '.join(pd)} do not match the reference's "
                f"{', '.join(rd)} (missing {', '.join(missing) or '-'}; extra "
                f"{', '.join(extra) or '-'})"
            )
        return list(rd), [pred.bands[pd.index(d)] for d in rd], list(ref.bands), "description"
    if len(pred.bands) != len(ref.bands):
        raise InputError(
            f"{pred.path} has {len(pred.bands)} bands but the reference {ref.path} "
            f"{len(ref.bands)} (and not every band has a description to match them by)"
        )
    fallback = default_band_names(len(ref.bands))
    names = [r or p or f for r, p, f in zip(rd, pd, fallback, strict=True)]
    return names, list(pred.bands), list(ref.bands), "position"


def data_range_of(dtype: np.dtype, tags: dict[str, str], max_value: float) -> tuple[float, str]:
    """The data range L of one file's values (PSNR's peak, SSIM's constants, the nets'
    divisor) and the rule that chose it, from its dtype, tags and largest valid value:

    =========================================  ===========  ============================
    the file                                   L            unit
    =========================================  ===========  ============================
    tag ``reflectance_scale`` = S              S; 1/S if    reflectance x S (``0.0001``
                                               S < 1        is a multiplier: L = 10000)
    uint8                                      255          8-bit values
    other integers, valid values <= 20000      10000        reflectance x 10000 (S2 L2A,
                                                            offsets and clouds included)
    float, valid values <= 2                   1.0          reflectance 0..1
    anything else                              refused      pass ``data_range``
    =========================================  ===========  ============================
    """
    scale = tags.get("reflectance_scale")
    if scale is not None:
        try:
            s = float(scale)
        except ValueError:
            s = math.nan
        if s > 0 and math.isfinite(s):
            L = s if s >= 1 else 1.0 / s
            return float(round(L, 6)), f"tag reflectance_scale={scale}: reflectance x {L:g}"
    if dtype == np.uint8:
        return 255.0, "uint8: 8-bit values"
    if dtype.kind in "ui" and max_value <= SCALED_MAX:
        return 10000.0, f"{dtype.name} values <= {SCALED_MAX}: reflectance x 10000"
    if dtype.kind == "f" and max_value <= FLOAT_MAX:
        return 1.0, f"{dtype.name} values <= {FLOAT_MAX:g}: reflectance 0..1"
    raise InputError(
        f"{dtype.name} values up to {max_value:g} are not reflectance 0..1 nor x 10000: "
        "pass --data-range"
    )


@dataclass
class ImagePair:
    """A prediction on the reference's grid, the reference, and the pixels valid in both."""

    prediction: np.ndarray  # (bands, H, W) float64, NaN where not valid in that file
    reference: np.ndarray
    valid: np.ndarray  # (H, W)
    bands: list[str]
    band_matching: str
    resampling: str
    grid: RefGrid
    data_range: float
    data_range_rule: str
    warnings: list[str] = field(default_factory=list)


def _on_grid(path: str | Path, info: RasterInfo, grid: RefGrid) -> OnGrid:
    zero = 0 if info.dtype == np.uint16 and info.nodata is None else None
    return OnGrid(path, grid, implicit_nodata=zero)


def _data_range(prediction, reference, pinfo, rinfo, data_range, pred_max, ref_max):
    """(L, rule): ``data_range`` when given, else the one both files' units agree on."""
    if data_range is not None:
        if not (isinstance(data_range, (int, float)) and 0 < data_range < math.inf):
            raise InputError(f"data range must be a positive number, got {data_range!r}")
        return float(data_range), "given (--data-range)"
    L, how = data_range_of(rinfo.dtype, rinfo.tags, ref_max)
    Lp, how_p = data_range_of(pinfo.dtype, pinfo.tags, pred_max)
    if Lp != L:
        raise InputError(
            f"{prediction} holds {how_p} (range {Lp:g}) but {reference} {how} (range "
            f"{L:g}): convert one to the other's unit, or pass --data-range"
        )
    return L, how


def _alpha_warnings(*infos: RasterInfo) -> list[str]:
    return list(dict.fromkeys(
        f"{info.path}: band {', '.join(map(str, info.alpha))} is an alpha band (GDAL colour "
        "interpretation): used as a mask, not compared"
        for info in infos if info.alpha
    ))  # fmt: skip


def load_image_pair(
    prediction: str | Path,
    reference: str | Path,
    *,
    mask: str | Path | None = None,
    data_range: float | None = None,
) -> ImagePair:
    """Both images *whole* on the reference grid, bands matched, and the data range (for
    notebooks and small images: :func:`evaluate_image` reads in strips instead)."""
    pinfo, rinfo = raster_info(prediction), raster_info(reference)
    names, pb, rb, rule = match_bands(pinfo, rinfo)
    grid = _reference_grid(reference)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        with _on_grid(reference, rinfo, grid) as g:
            ref = g.read_bands(rb)
        with _on_grid(prediction, pinfo, grid) as g:
            pred, resampling = g.read_bands(pb), g.resampling
        ok = np.isfinite(pred).all(axis=0) & np.isfinite(ref).all(axis=0)
        if mask is not None:
            with OnGrid(mask, grid, categorical=True) as g:
                m = g.read_all()
            ok &= np.isfinite(m) & (m != 0)
    if not ok.any():
        raise InputError(f"{prediction}: no pixel is valid in both it and {reference}")
    L, how = _data_range(prediction, reference, pinfo, rinfo, data_range,
                         float(np.nanmax(pred)), float(np.nanmax(ref)))  # fmt: skip
    warnings = _alpha_warnings(pinfo, rinfo)
    return ImagePair(pred, ref, ok, names, rule, resampling, grid, L, how, warnings)


def complete_chips(pair: ImagePair, size: int = FD_CHIP, max_chips: int = FD_MAX_CHIPS):
    """Paired lists of (bands, size, size) chips of the prediction and the reference at
    the same places: non-overlapping, from the top-left corner, every pixel valid; at
    most ``max_chips``, evenly spread over the valid ones."""
    h, w = pair.valid.shape
    nh, nw = h // size, w // size
    blocks = pair.valid[: nh * size, : nw * size].reshape(nh, size, nw, size).all(axis=(1, 3))
    cut = [(slice(None), slice(r, r + size), slice(c, c + size))
           for r, c in chip_places(blocks, size, max_chips)]  # fmt: skip
    return [pair.prediction[s] for s in cut], [pair.reference[s] for s in cut]


def _evaluate(prediction, reference, mask, data_range, feature_net, fd_chip, window_rows):
    if not (isinstance(fd_chip, int) and fd_chip >= 8):
        raise InputError(f"the chip side must be a whole number >= 8 px, got {fd_chip!r}")
    if not (isinstance(window_rows, int) and window_rows >= 1):
        raise InputError(f"window rows must be a whole number >= 1, got {window_rows!r}")
    pinfo, rinfo = raster_info(prediction), raster_info(reference)
    names, pb, rb, rule = match_bands(pinfo, rinfo)
    if data_range is not None:  # a bad one is refused before any pass
        _data_range(prediction, reference, pinfo, rinfo, data_range, math.nan, math.nan)
    grid = _reference_grid(reference)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), contextlib.ExitStack() as stack:
        ref = stack.enter_context(_on_grid(reference, rinfo, grid))
        pred = stack.enter_context(_on_grid(prediction, pinfo, grid))
        m_grid = None if mask is None else stack.enter_context(
            OnGrid(mask, grid, categorical=True))  # fmt: skip
        readers = ImageReaders(grid, pred, ref, pb, rb, m_grid)
        s = scan(readers, rows=window_rows, chip=fd_chip, figure_side=FIGURE_SIDE)
        if s.n == 0:
            raise InputError(f"{prediction}: no pixel is valid in both it and {reference}")
        L, how = _data_range(prediction, reference, pinfo, rinfo, data_range,
                             s.pred_max, s.ref_max)  # fmt: skip
        scores = [band_ssim(readers, s, b, L, rows=window_rows) for b in range(len(names))]
        pc, rc = collect_chips(readers, chip_places(s.chips, fd_chip, FD_MAX_CHIPS), fd_chip)
    m: dict[str, Any] = {"kind": "image"}
    m |= assemble_metrics(s, [a for a, _ in scores], [b for _, b in scores], L, names)
    m["n_pixels"] = m["valid_px"]
    m |= {
        "data_range_rule": how,
        "bands": names,
        "band_matching": rule,
        "pixel_size_m": list(grid.pixel_size_m),
        "shape": list(grid.shape),
        "prediction": str(prediction),
        "reference": str(reference),
        "prediction_resampling": pred.resampling,
    }
    m |= distribution_metrics(pc, rc, data_range=L, feature_net=feature_net, chip=fd_chip)
    m["warnings"] = _alpha_warnings(pinfo, rinfo)
    return m, s.image_view(names, L)


def evaluate_image(
    prediction: str | Path,
    reference: str | Path,
    *,
    mask: str | Path | None = None,
    data_range: float | None = None,
    feature_net: str | Path | None = None,
    fd_chip: int = FD_CHIP,
    window_rows: int = WINDOW_ROWS,
) -> dict[str, Any]:
    """Every image metric of ``prediction`` against ``reference`` (see module docstring),
    both read ``window_rows`` rows at a time (memory, not the result)."""
    args = (mask, data_range, feature_net, fd_chip, window_rows)
    return _evaluate(prediction, reference, *args)[0]


def evaluate_image_to_folder(
    prediction: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    *,
    mask: str | Path | None = None,
    data_range: float | None = None,
    feature_net: str | Path | None = None,
    fd_chip: int = FD_CHIP,
    window_rows: int = WINDOW_ROWS,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate and write ``metrics.json`` (strict JSON), ``report.md`` and ``figure.png``
    into ``out_dir``, each atomically (refused when ``out_dir`` holds anything and
    ``overwrite`` is false)."""
    out_dir = check_out_dir(out_dir, overwrite)
    args = (mask, data_range, feature_net, fd_chip, window_rows)
    m, view = _evaluate(prediction, reference, *args)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", m)
    write_text_atomic(out_dir / "report.md", render_image_markdown(m))
    image_figure(out_dir / "figure.png", view, title=f"{Path(prediction).name}: {summary(m)}")
    return m
