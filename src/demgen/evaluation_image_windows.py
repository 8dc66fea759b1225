"""Windowed image evaluation: the metrics of :mod:`demgen.evaluation_image` in strips of rows.

The rasters are read a strip of ``window_rows`` rows at a time
(:func:`demgen.evaluation_windows.strips`, the DEM path's), in three kinds of pass:

1. :func:`scan`, once, all bands: the pixels valid in both files (kept as a bit mask, 1
   bit per pixel), per band the sums of squared error, |error| and reference values, the
   sum of the per-pixel spectral angles (all float64), each file's largest valid value
   (for the data range rule), which ``fd_chip`` chips are complete, and every k-th pixel
   of both for the figure (:class:`ImageView`);
2. :func:`band_ssim`, once per band: SSIM and MS-SSIM. Strips carry a halo of the Gaussian
   window's radius, so every counted pixel sees the neighbours it has in the whole image,
   and :func:`demgen.metrics.ssim.gaussian_filter` gives any strip the same per-pixel bits.
   MS-SSIM's scale 1 streams while it builds the 2 x 2-pooled scale 2 (kept in memory,
   float64: 1/4 of the band, then 1/16, ...), and each coarser scale streams in strips
   the same way. The arithmetic is :func:`demgen.metrics.image._ms_ssim_band`'s and
   :func:`demgen.metrics.ssim.ssim_map`'s, on the same filtered values;
3. :func:`collect_chips`: the chip rows holding the chosen complete chips, ``fd_chip``
   rows at a time (float32 chips: what the nets receive).

The numbers equal :func:`demgen.metrics.image.image_metrics` on the whole arrays (to the
rounding of float64 sums: tested to 1e-9 relative). Memory: one strip of every band
(a few tens of bytes per pixel of the strip), the valid-pixel bits, the pooled MS-SSIM
scales of one band of both files (2 x 1/4 x 8 bytes per pixel of the grid: 0.5 GB for a
10980 px tile) and the chips (at most 4096 pairs of 64 px x 4 bands: 0.5 GB); 1.2 GB at
the peak for a 10980 x 10980 x 4 pair (``benchmarks/evaluate_image_memory.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demgen.errors import InputError, first_line
from demgen.evaluation_grid import OnGrid, RefGrid
from demgen.evaluation_windows import WINDOW_ROWS, strips
from demgen.metrics.image import (
    MS_SSIM_BETAS,
    _pool2,
    _spectral_angles_deg,
    ms_ssim_min_size,
    psnr_from_mse,
)
from demgen.metrics.ssim import K1, K2, RADIUS, gaussian_filter, near_invalid

__all__ = ["FD_CHIP", "FD_MAX_CHIPS", "WINDOW_ROWS", "ImageReaders", "ImageView", "Scan",
           "assemble_metrics", "band_ssim", "chip_places", "collect_chips",
           "distribution_metrics", "scan"]  # fmt: skip

FD_CHIP = 64  # side of the chips of the distribution metrics (px)
FD_MAX_CHIPS = 4096  # at most this many chips, evenly spread over the valid ones


@dataclass
class ImageReaders:
    """The matched bands of prediction and reference on the reference grid, and a mask."""

    grid: RefGrid
    pred: OnGrid
    ref: OnGrid
    pred_bands: list[int]  # 1-based, pairwise with ref_bands
    ref_bands: list[int]
    mask: OnGrid | None = None

    def read(self, row0: int, nrows: int, which: Sequence[int] | None = None, *,
             masked: bool = True) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(prediction, reference), (bands, nrows, width) float64, of the pairs ``which``
        (0-based; default all), NaN where not valid in that file unless ``masked`` is False."""
        idx = range(len(self.ref_bands)) if which is None else which
        p = self.pred.read_bands([self.pred_bands[i] for i in idx], row0, nrows, masked=masked)
        r = self.ref.read_bands([self.ref_bands[i] for i in idx], row0, nrows, masked=masked)
        return p, r

    def valid(self, p: np.ndarray, r: np.ndarray, row0: int) -> np.ndarray:
        """Finite in every band of both (read masked) and nonzero in the mask."""
        ok = np.isfinite(p).all(axis=0) & np.isfinite(r).all(axis=0)
        if self.mask is not None:
            m = self.mask.read(row0, ok.shape[0])
            ok &= np.isfinite(m) & (m != 0)
        return ok


@dataclass
class ImageView:
    """Every ``step``-th pixel of both images (rows and columns), for the figure."""

    prediction: np.ndarray  # (bands, h, w) float32, NaN where not valid in that file
    reference: np.ndarray
    valid: np.ndarray  # (h, w)
    bands: list[str]
    data_range: float
    step: int


@dataclass
class Scan:
    """What the first pass gathers (:func:`scan`)."""

    height: int
    width: int
    bands: int
    chip: int
    step: int
    n: int = 0
    sq: np.ndarray = field(init=False)  # per band: sum of squared errors
    abs_err: np.ndarray = field(init=False)  # sum of |errors|
    ref_sum: np.ndarray = field(init=False)  # sum of reference values
    sam: float = 0.0  # sum of spectral angles (deg)
    pred_max: float = -math.inf  # largest value valid in the prediction file
    ref_max: float = -math.inf
    bits: np.ndarray = field(init=False)  # valid pixels, np.packbits along rows
    chips: np.ndarray = field(init=False)  # (H // chip, W // chip): chip fully valid
    view: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        h, w, k = self.height, self.width, self.step
        self.sq, self.abs_err, self.ref_sum = (np.zeros(self.bands) for _ in range(3))
        self.bits = np.zeros((h, (w + 7) // 8), np.uint8)
        self.chips = np.ones((h // self.chip, w // self.chip), bool)
        vh, vw = -(-h // k), -(-w // k)
        self.view = (np.full((self.bands, vh, vw), np.nan, np.float32),
                     np.full((self.bands, vh, vw), np.nan, np.float32),
                     np.zeros((vh, vw), bool))  # fmt: skip

    def valid(self, row0: int, row1: int) -> np.ndarray:
        """The valid pixels of rows ``row0 .. row1``."""
        return np.unpackbits(self.bits[row0:row1], axis=1, count=self.width).astype(bool)

    def add(self, row0: int, p: np.ndarray, r: np.ndarray, ok: np.ndarray) -> None:
        """Rows from ``row0`` on: (bands, rows, W) of both (NaN = not valid) and (rows, W)."""
        for a, name in ((p, "pred_max"), (r, "ref_max")):  # np.nanmax, by strips
            top = float(np.fmax.reduce(a, axis=None))  # NaN only when every value is
            if not math.isnan(top):
                setattr(self, name, max(getattr(self, name), top))
        self.bits[row0 : row0 + len(ok)] = np.packbits(ok, axis=1)
        pv, rv = p[:, ok], r[:, ok]
        e = pv - rv
        self.n += pv.shape[1]
        self.sq += (e * e).sum(axis=1)
        self.abs_err += np.abs(e).sum(axis=1)
        self.ref_sum += rv.sum(axis=1)
        if self.bands > 1 and pv.shape[1]:
            self.sam += float(_spectral_angles_deg(pv, rv).sum())
        del pv, rv, e
        size, (nh, nw) = self.chip, self.chips.shape
        top = min(row0 + len(ok), nh * size)
        if top > row0 and nw:
            rows_ok = ok[: top - row0, : nw * size].reshape(top - row0, nw, size).all(axis=2)
            q = np.arange(row0, top) // size
            for c in np.unique(q):
                self.chips[c] &= rows_ok[q == c].all(axis=0)
        k = self.step
        sel = np.arange((-row0) % k, len(ok), k)  # rows that are multiples of k
        dst = (row0 + sel) // k
        self.view[0][:, dst] = p[:, sel, ::k]
        self.view[1][:, dst] = r[:, sel, ::k]
        self.view[2][dst] = ok[sel, ::k]

    def image_view(self, bands: list[str], data_range: float) -> ImageView:
        return ImageView(*self.view, bands, data_range, self.step)


def scan(readers: ImageReaders, *, rows: int = WINDOW_ROWS, chip: int = FD_CHIP,
         figure_side: int = 1024) -> Scan:  # fmt: skip
    """The first pass (module docstring), ``rows`` rows at a time."""
    h, w = readers.grid.shape
    step = max(1, math.ceil(max(h, w) / figure_side))
    s = Scan(h, w, len(readers.ref_bands), chip, step)
    for a, b, _, _ in strips(h, max(1, int(rows))):
        p, r = readers.read(a, b - a)
        s.add(a, p, r, readers.valid(p, r, a))
    return s


Source = Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _scale(source: Source, shape: tuple[int, int], rows: int, c1: float, c2: float, *,
           ssim: bool, cs: bool, last: bool, pool: bool):  # fmt: skip
    """One scale, strip by strip: [sum, count] of SSIM and of MS-SSIM's cs term (times the
    luminance term when ``last``) over the pixels whose whole window is valid, and, when
    ``pool``, the next scale (x, y zeroed off its valid pixels, valid) as ``_ms_ssim_band``
    pools it. ``source(a, b)``: rows a..b of x, y (zeroed where not valid) and valid.
    ``rows`` must be even (strips start on even rows: the pooling pairs stay whole)."""
    height, width = shape
    sums = np.zeros(4)
    nxt = None
    if pool:
        hh, ww = height // 2, width // 2
        nxt = (np.zeros((hh, ww)), np.zeros((hh, ww)), np.zeros((hh, ww), bool))
    for a, b, r0, r1 in strips(height, rows, RADIUS):
        x, y, ok = source(a, b)
        core = slice(r0 - a, r1 - a)
        keep = (ok & ~near_invalid(ok))[core]
        # ssim_map's and _ms_ssim_band's expressions, on the core rows of the same filters
        mu_x, mu_y = gaussian_filter(x)[core], gaussian_filter(y)[core]
        var_x = np.maximum(gaussian_filter(x * x)[core] - mu_x**2, 0.0)
        var_y = np.maximum(gaussian_filter(y * y)[core] - mu_y**2, 0.0)
        cov = gaussian_filter(x * y)[core] - mu_x * mu_y
        count = int(keep.sum())
        if ssim:
            num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
            den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
            sums[:2] += float((num / den)[keep].sum()), count
            del num, den
        if cs:
            c = (2 * cov + c2) / (var_x + var_y + c2)
            if last:  # the coarsest scale contributes full SSIM (l * cs)
                c = c * (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
            sums[2:] += float(c[keep].sum()), count
            del c
        del mu_x, mu_y, var_x, var_y, cov
        half = (r1 - r0) // 2  # an odd last row is dropped, as _pool2 drops it
        if nxt is not None and half:
            o, two = r0 // 2, slice(r0 - a, r0 - a + 2 * half)
            ok2 = _pool2(ok[two].astype(np.float64)) == 1.0  # valid if all 4 parents are
            nxt[0][o : o + half] = np.where(ok2, _pool2(x[two]), 0.0)
            nxt[1][o : o + half] = np.where(ok2, _pool2(y[two]), 0.0)
            nxt[2][o : o + half] = ok2
    return sums, nxt


def band_ssim(readers: ImageReaders, s: Scan, band: int, data_range: float, *,
              rows: int = WINDOW_ROWS, betas: Sequence[float] = MS_SSIM_BETAS):  # fmt: skip
    """(SSIM, MS-SSIM) of band ``band`` (0-based) over the valid pixels of ``s``: what
    :func:`demgen.metrics.ssim.masked_ssim` and ``_ms_ssim_band`` give on the whole band
    (MS-SSIM None when the image is under :func:`ms_ssim_min_size`, NaN when a scale has
    no pixel with a whole valid window)."""
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    rows = max(2, int(rows) + int(rows) % 2)
    ms = min(s.height, s.width) >= ms_ssim_min_size(len(betas))

    def read(a: int, b: int):
        p, r = readers.read(a, b - a, [band], masked=False)
        ok = s.valid(a, b)
        return np.where(ok, p[0], 0.0), np.where(ok, r[0], 0.0), ok

    last = len(betas) - 1
    sums, nxt = _scale(read, (s.height, s.width), rows, c1, c2, ssim=True, cs=ms,
                       last=last == 0, pool=ms and last > 0)  # fmt: skip
    ssim = sums[0] / sums[1] if sums[1] else math.nan
    if not ms:
        return float(ssim), None
    total = 1.0
    for j, beta in enumerate(betas):
        if j:
            x, y, ok = nxt

            def pooled(a: int, b: int, x=x, y=y, ok=ok):
                return x[a:b], y[a:b], ok[a:b]

            sums, nxt = _scale(pooled, ok.shape, rows, c1, c2, ssim=False, cs=True,
                               last=j == last, pool=j < last)  # fmt: skip
            del x, y, ok
        if not sums[3]:
            return float(ssim), math.nan
        total *= max(float(sums[2] / sums[3]), 0.0) ** beta
    return float(ssim), float(total)


def chip_places(blocks: np.ndarray, size: int, max_chips: int) -> np.ndarray:
    """(row, col) of the top-left corners of the complete chips (``blocks``: which are),
    row-major; at most ``max_chips``, evenly spread."""
    places = np.argwhere(blocks) * size
    if len(places) > max_chips:
        places = places[np.linspace(0, len(places) - 1, max_chips).round().astype(int)]
    return places


def collect_chips(readers: ImageReaders, places: np.ndarray, size: int):
    """Paired lists of (bands, size, size) float32 chips at ``places``, read by chip row."""
    pc: list[np.ndarray] = []
    rc: list[np.ndarray] = []
    for row in np.unique(places[:, 0]) if len(places) else ():
        p, r = readers.read(int(row), size)
        for col in places[places[:, 0] == row, 1]:
            pc.append(p[:, :, col : col + size].astype(np.float32))
            rc.append(r[:, :, col : col + size].astype(np.float32))
    return pc, rc


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


def assemble_metrics(s: Scan, ssims: Sequence[float], ms_ssims: Sequence[float | None],
                     data_range: float, names: Sequence[str], *,
                     betas: Sequence[float] = MS_SSIM_BETAS,
                     resolution_ratio: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """:func:`demgen.metrics.image.image_metrics`'s dict (same keys, same formulas) from
    the sums of :func:`scan` and each band's :func:`band_ssim`."""
    L, n, nb = float(data_range), s.n, s.bands
    mse = s.sq / n
    per_band: dict[str, dict] = {}
    for b, name in enumerate(names):
        mse_b, mu_b = float(mse[b]), float(s.ref_sum[b] / n)
        if mse_b == 0:
            e_b = mse_b
        else:
            e_b = 100.0 * resolution_ratio * math.sqrt(mse_b) / abs(mu_b) if mu_b else math.inf
        per_band[name] = {
            "psnr_db": psnr_from_mse(mse_b, L),
            "ssim": float(ssims[b]),
            "ms_ssim": ms_ssims[b],
            "rmse": math.sqrt(mse_b),
            "mae": float(s.abs_err[b] / n),
            "ergas": float(e_b),
        }
    rmse_b, mu = np.sqrt(mse), s.ref_sum / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(rmse_b == 0, 0.0, rmse_b**2 / mu**2)
    mse_all = float(s.sq.sum() / (nb * n))
    out = {
        "psnr_db": psnr_from_mse(mse_all, L),
        "ssim": float(np.mean(ssims)),
        "ms_ssim": None if ms_ssims[0] is None else float(np.mean(ms_ssims)),
        "sam_deg": s.sam / n if nb > 1 else None,
        "ergas": float(100.0 * resolution_ratio * np.sqrt(np.mean(rel))),
        "rmse": math.sqrt(mse_all),
        "mae": float(s.abs_err.sum() / (nb * n)),
        "valid_px": n,
        "data_range": L,
        "resolution_ratio": float(resolution_ratio),
        "per_band": per_band,
    }
    if out["ms_ssim"] is None:
        out["ms_ssim_note"] = (
            f"image {s.height}x{s.width} px is smaller than {ms_ssim_min_size(len(betas))} "
            f"px, the least side for {len(betas)} MS-SSIM scales"
        )
    return out
