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
- Metrics: :func:`demgen.metrics.image.image_metrics` (PSNR, SSIM, MS-SSIM, SAM, ERGAS,
  RMSE, MAE in the files' units, overall and per band) and, on complete valid chips
  (:func:`complete_chips`), :mod:`demgen.metrics.perceptual`: ``fd_demgen_rand`` (a
  Fréchet distance on demgen's fixed random-feature net, *not* Inception FID) and, with a
  user's TorchScript ``feature_net``, FID, KID and LPIPS.
- Report: ``metrics.json``, ``report.md`` and ``figure.png``
  (:mod:`demgen.evaluation_image_report`).

Memory: unlike the DEM path (read in strips), both images are read whole as float64 and
the metrics take copies: about 60 bytes per pixel and band at the peak (10k x 10k px x 4
bands: ~24 GB). Crop larger scenes, or evaluate them in tiles.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp

from demgen.errors import InputError, first_line
from demgen.evaluation_grid import GDAL_CACHE_BYTES, OnGrid, RefGrid, check_out_dir
from demgen.evaluation_grid import reference_grid as _reference_grid
from demgen.evaluation_image_report import image_figure, render_image_markdown, summary
from demgen.io.jsonio import write_json
from demgen.io.raster import default_band_names, open_raster, write_text_atomic
from demgen.metrics.image import image_metrics

__all__ = [  # the report's functions are importable from here too
    "evaluate_image", "evaluate_image_to_folder", "image_figure", "is_image_raster",
    "load_image_pair", "render_image_markdown", "resolve_kind", "summary",
]  # fmt: skip

KINDS = ("auto", "dem", "image")
FD_CHIP = 64  # side of the chips of the distribution metrics (px)
FD_MAX_CHIPS = 4096  # at most this many chips, evenly spread over the valid ones
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


def _read(path: str | Path, info: RasterInfo, bands: list[int], grid: RefGrid):
    zero = 0 if info.dtype == np.uint16 and info.nodata is None else None
    with OnGrid(path, grid, implicit_nodata=zero) as g:
        return g.read_bands(bands), g.resampling


def load_image_pair(
    prediction: str | Path,
    reference: str | Path,
    *,
    mask: str | Path | None = None,
    data_range: float | None = None,
) -> ImagePair:
    """Both images whole on the reference grid, bands matched, and the data range."""
    pinfo, rinfo = raster_info(prediction), raster_info(reference)
    names, pb, rb, rule = match_bands(pinfo, rinfo)
    grid = _reference_grid(reference)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        ref, _ = _read(reference, rinfo, rb, grid)
        pred, resampling = _read(prediction, pinfo, pb, grid)
        ok = np.isfinite(pred).all(axis=0) & np.isfinite(ref).all(axis=0)
        if mask is not None:
            with OnGrid(mask, grid, categorical=True) as g:
                m = g.read_all()
            ok &= np.isfinite(m) & (m != 0)
    if not ok.any():
        raise InputError(f"{prediction}: no pixel is valid in both it and {reference}")
    if data_range is not None:
        if not (isinstance(data_range, (int, float)) and 0 < data_range < math.inf):
            raise InputError(f"data range must be a positive number, got {data_range!r}")
        L, how = float(data_range), "given (--data-range)"
    else:
        (L, how), (Lp, how_p) = (
            data_range_of(info.dtype, info.tags, float(np.nanmax(a)))
            for info, a in ((rinfo, ref), (pinfo, pred))
        )
        if Lp != L:
            raise InputError(
                f"{prediction} holds {how_p} (range {Lp:g}) but {reference} {how} (range "
                f"{L:g}): convert one to the other's unit, or pass --data-range"
            )
    warnings = list(dict.fromkeys(
        f"{info.path}: band {', '.join(map(str, info.alpha))} is an alpha band (GDAL colour "
        "interpretation): used as a mask, not compared"
        for info in (pinfo, rinfo) if info.alpha
    ))  # fmt: skip
    return ImagePair(pred, ref, ok, names, rule, resampling, grid, L, how, warnings)


def complete_chips(pair: ImagePair, size: int = FD_CHIP, max_chips: int = FD_MAX_CHIPS):
    """Paired lists of (bands, size, size) chips of the prediction and the reference at
    the same places: non-overlapping, from the top-left corner, every pixel valid; at
    most ``max_chips``, evenly spread over the valid ones."""
    h, w = pair.valid.shape
    nh, nw = h // size, w // size
    blocks = pair.valid[: nh * size, : nw * size].reshape(nh, size, nw, size).all(axis=(1, 3))
    places = np.argwhere(blocks) * size
    if len(places) > max_chips:
        places = places[np.linspace(0, len(places) - 1, max_chips).round().astype(int)]
    cut = [(slice(None), slice(r, r + size), slice(c, c + size)) for r, c in places]
    return [pair.prediction[s] for s in cut], [pair.reference[s] for s in cut]


def distribution_metrics(pred_chips, ref_chips, *, data_range, feature_net=None, chip=FD_CHIP):
    """``fd_demgen_rand`` (None with ``fd_note`` under 2 chips) and, with ``feature_net``
    (a TorchScript file), ``fid_torchscript``, ``kid_torchscript`` and, when the net
    returns a list of feature maps, ``lpips_torchscript``."""
    n = len(ref_chips)
    out: dict[str, Any] = {"fd_chip": chip, "fd_chips": n, "fd_demgen_rand": None}
    if feature_net is not None:
        out |= dict.fromkeys(("fid_torchscript", "kid_torchscript", "lpips_torchscript"))
        out["feature_net"] = str(feature_net)
    if n < 2:
        out["fd_note"] = (
            f"{n} complete valid chip(s) of {chip} px: the distribution metrics need 2 or "
            "more (a smaller --fd-chip gives more)"
        )
        return out
    import torch

    from demgen.metrics import perceptual as pm

    kw = {"data_range": data_range}
    out["fd_demgen_rand"] = pm.frechet_distance_demgen_random_features(pred_chips, ref_chips, **kw)
    if feature_net is None:
        return out
    try:
        net = pm.load_feature_net(feature_net)
        with torch.no_grad():
            probe = net(torch.from_numpy((ref_chips[0][None] / data_range).astype(np.float32)))
        out["fid_torchscript"] = pm.fid_torchscript(pred_chips, ref_chips, feature_net, **kw)
        out["kid_torchscript"] = pm.kid_torchscript(pred_chips, ref_chips, feature_net, **kw)
        if isinstance(probe, (list, tuple)) and all(t.dim() == 4 for t in probe):
            out["lpips_torchscript"] = pm.lpips_torchscript(
                pred_chips, ref_chips, feature_net, **kw
            )
        else:
            out["lpips_note"] = "LPIPS needs a net that returns a list of feature maps"
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"{feature_net}: not a feature net for {ref_chips[0].shape[0]}-band chips of "
            f"{chip} px ({first_line(exc)})"
        ) from exc
    return out


def _evaluate(prediction, reference, mask, data_range, feature_net, fd_chip):
    if not (isinstance(fd_chip, int) and fd_chip >= 8):
        raise InputError(f"the chip side must be a whole number >= 8 px, got {fd_chip!r}")
    pair = load_image_pair(prediction, reference, mask=mask, data_range=data_range)
    L = pair.data_range
    m: dict[str, Any] = {"kind": "image"}
    m |= image_metrics(pair.prediction, pair.reference, pair.valid, data_range=L,
                       band_names=pair.bands)  # fmt: skip
    m["n_pixels"] = m["valid_px"]
    m |= {
        "data_range_rule": pair.data_range_rule,
        "bands": pair.bands,
        "band_matching": pair.band_matching,
        "pixel_size_m": list(pair.grid.pixel_size_m),
        "shape": list(pair.grid.shape),
        "prediction": str(prediction),
        "reference": str(reference),
        "prediction_resampling": pair.resampling,
    }
    pc, rc = complete_chips(pair, fd_chip)
    m |= distribution_metrics(pc, rc, data_range=L, feature_net=feature_net, chip=fd_chip)
    m["warnings"] = pair.warnings
    return m, pair


def evaluate_image(
    prediction: str | Path,
    reference: str | Path,
    *,
    mask: str | Path | None = None,
    data_range: float | None = None,
    feature_net: str | Path | None = None,
    fd_chip: int = FD_CHIP,
) -> dict[str, Any]:
    """Every image metric of ``prediction`` against ``reference`` (see module docstring)."""
    return _evaluate(prediction, reference, mask, data_range, feature_net, fd_chip)[0]


def evaluate_image_to_folder(
    prediction: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    *,
    mask: str | Path | None = None,
    data_range: float | None = None,
    feature_net: str | Path | None = None,
    fd_chip: int = FD_CHIP,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate and write ``metrics.json`` (strict JSON), ``report.md`` and ``figure.png``
    into ``out_dir``, each atomically (refused when ``out_dir`` holds anything and
    ``overwrite`` is false)."""
    out_dir = check_out_dir(out_dir, overwrite)
    m, pair = _evaluate(prediction, reference, mask, data_range, feature_net, fd_chip)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", m)
    write_text_atomic(out_dir / "report.md", render_image_markdown(m))
    image_figure(out_dir / "figure.png", pair, title=f"{Path(prediction).name}: {summary(m)}")
    return m
