"""Honest baselines a DEM -> image model must beat, fitted on the training pixels only.

The counterparts of :mod:`demgen.baselines` for the other direction (``demgen test`` on a
:mod:`demgen.tasks.dem2image` checkpoint):

- :class:`MeanImage`: the mean training image per band, over every valid training pixel;
  per land-cover class when the task reads a land-cover layer (a class never seen in
  training gets the overall mean).
- :class:`LinearRelief`: per pixel, each band = w . relief + b, least squares in float64 on
  a bounded, seeded random sample of valid training pixels. The relief is exactly what the
  model sees (:func:`demgen.tasks.relief.relief_features` with the task's own height
  statistics, pixel size, sun and radius, :class:`ReliefParams`), the channels of
  :data:`RELIEF_CHANNELS`: height, slope, aspect (as the normal's east and north
  components, which need no angle wrap-around) and the hillshade.

Both predict the image in the store's stored units (uint16 reflectance x 10000 for
Sentinel-2 L2A), never below 0 (as the model's decode), for every band the task writes.
:func:`fit_image_baselines` fits both on a chip store's ``train`` split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from demgen.data.normalize import norm_from_dict
from demgen.errors import InputError
from demgen.tasks.dem2image import LANDCOVER, height_center_scale
from demgen.tasks.relief import FEATURES, relief_features

#: The relief channels :class:`LinearRelief` regresses on (an intercept is added).
RELIEF_CHANNELS: tuple[str, ...] = ("height", "slope", "normal_x", "normal_y", "hillshade")


@dataclass(frozen=True)
class ReliefParams:
    """The arguments of :func:`relief_features` a task computes its features with."""

    pixel_size: float
    height_mean: float
    height_std: float
    sun_azimuth: float = 150.0
    sun_elevation: float = 40.0
    radius: int = 8

    @classmethod
    def from_task(cls, task: Any) -> ReliefParams:
        """The relief of ``task`` (a DEM -> image task): its hyperparameters, and the centre
        and scale of its training heights (:func:`height_center_scale`)."""
        hp = task.hparams
        centre, scale = height_center_scale(norm_from_dict(hp["elevation_norm"]))
        return cls(
            pixel_size=float(hp.get("pixel_size") or 1.0),  # the task's own fallback
            height_mean=centre,
            height_std=scale,
            sun_azimuth=float(hp.get("sun_azimuth", 150.0)),
            sun_elevation=float(hp.get("sun_elevation", 40.0)),
            radius=int(hp.get("relief_radius", 8)),
        )


def relief_design(dem: np.ndarray, params: ReliefParams) -> np.ndarray:
    """Heights in metres (H, W) or (B, H, W), NaN where invalid -> the
    :data:`RELIEF_CHANNELS` (..., K, H, W) float64. Invalid heights take the training
    centre first, as the task fills them, so the relief is the model's own."""
    h = np.asarray(dem, np.float64)
    single = h.ndim == 2
    h = np.where(np.isfinite(h), h, params.height_mean)
    t = torch.from_numpy(h.reshape(-1, 1, *h.shape[-2:]))
    feats = relief_features(
        t, params.pixel_size, height_mean=params.height_mean, height_std=params.height_std,
        sun_azimuth=params.sun_azimuth, sun_elevation=params.sun_elevation,
        radius=params.radius,
    )  # fmt: skip
    idx = [FEATURES.index(c) for c in RELIEF_CHANNELS]
    out = feats[:, idx].double().numpy()
    return out[0] if single else out


@dataclass
class MeanImage:
    """The mean training image: ``mean`` (C,) per band, and per land-cover class
    (``class_means``: code -> (C,)) when fitted with the layer ``landcover_layer``."""

    mean: np.ndarray
    class_means: dict[int, np.ndarray] = field(default_factory=dict)
    landcover_layer: str | None = None

    def predict(self, dem: np.ndarray, landcover: np.ndarray | None = None) -> np.ndarray:
        """(..., C, H, W) float64 stored units for heights (..., H, W) (only their shape
        counts) and, for a per-class fit, the class codes (..., H, W)."""
        shape = np.shape(dem)
        out = np.broadcast_to(self.mean.reshape(-1, 1, 1), (*shape[:-2], len(self.mean),
                                                             *shape[-2:])).copy()  # fmt: skip
        if self.class_means and landcover is not None:
            codes = np.asarray(landcover, np.float64)
            ok = np.isfinite(codes)
            codes = np.where(ok, np.round(codes), -1).astype(np.int64)
            by_pixel = np.moveaxis(out, -3, -1)  # a view of out: (..., H, W, C)
            for code, m in self.class_means.items():
                by_pixel[ok & (codes == code)] = m
        return out


@dataclass
class LinearRelief:
    """Each band = ``coef[:K] . relief + coef[K]``, ``coef`` (K + 1, C), fitted by least
    squares; the relief of ``params`` (:func:`relief_design`)."""

    params: ReliefParams
    coef: np.ndarray | None = None

    def fit(self, relief: np.ndarray, pixels: np.ndarray) -> LinearRelief:
        """``relief`` (N, K) design rows, ``pixels`` (N, C) stored units."""
        a = np.column_stack([np.asarray(relief, np.float64), np.ones(len(relief))])
        self.coef, *_ = np.linalg.lstsq(a, np.asarray(pixels, np.float64), rcond=None)
        return self

    def predict(self, dem: np.ndarray, landcover: np.ndarray | None = None) -> np.ndarray:
        """(..., C, H, W) float64 stored units (>= 0) for heights (..., H, W) in metres,
        NaN where invalid. ``landcover`` is ignored (the regression has no class terms)."""
        if self.coef is None:
            raise RuntimeError("LinearRelief.predict called before fit")
        x = relief_design(dem, self.params)
        k = len(RELIEF_CHANNELS)
        out = np.tensordot(self.coef[:k], x, axes=([0], [-3]))  # (C, ..., H, W)
        out = np.moveaxis(out, 0, -3) + self.coef[k].reshape(-1, 1, 1)
        return np.maximum(out, 0.0)


def band_index(store: Any, bands: tuple[str, ...] | list[str]) -> list[int]:
    """Indices of ``bands`` in the store's image; one-line InputError when one is missing."""
    have = list(store.bands)
    missing = [b for b in bands if b not in have]
    if missing:
        raise InputError(
            f"{store.path}: the image lacks bands {missing} that the checkpoint writes "
            f"(it has {have})"
        )
    return [have.index(b) for b in bands]


def landcover_layer(task: Any, store: Any) -> str | None:
    """The store layer of the task's land-cover input, or None for a DEM-only task."""
    if LANDCOVER not in task.spec.input_names:
        return None
    if LANDCOVER not in store.layers:
        raise InputError(
            f"{store.path}: the checkpoint reads a {LANDCOVER!r} layer, which the store does "
            f"not hold (layers: {sorted(store.layers)})"
        )
    return LANDCOVER


def fit_image_baselines(
    store_path: str | Path, task: Any, *, max_pixels: int = 200_000, seed: int = 0,
    chunk: int = 64,
) -> tuple[MeanImage, LinearRelief]:  # fmt: skip
    """Both baselines of ``task``'s output bands, fitted on the store's ``train`` split.

    A pixel counts where the store's mask holds and its height and every band are finite
    (and, per class, its land cover). The means are over every such pixel; the regression
    over a seeded random sample of at most ``max_pixels`` of them, spread evenly over the
    chips (least squares on 6 unknowns needs no more).
    """
    from demgen.data.chips import ChipStore

    store = ChipStore(store_path)
    idx = store.indices("train")
    if idx.size == 0:
        raise InputError(f"{store_path}: the training split is empty")
    bands = band_index(store, task.spec.outputs[0].bands)
    lc_name = landcover_layer(task, store)
    params = ReliefParams.from_task(task)
    rng = np.random.default_rng(seed)
    per_chip = max(1, max_pixels // idx.size)
    total, count = np.zeros(len(bands)), 0
    per_class: dict[int, list] = {}
    rows, pix = [], []
    for s in range(0, idx.size, chunk):
        js = idx[s : s + chunk]
        elev = np.stack([np.asarray(store.elevation[j], np.float64) for j in js])
        img = np.stack([np.asarray(store.image[j])[bands] for j in js]).astype(np.float64)
        ok = np.stack([np.asarray(store.mask[j], bool) for j in js])
        ok &= np.isfinite(elev) & np.isfinite(img).all(axis=1)
        design = relief_design(np.where(ok, elev, np.nan), params)
        for b, j in enumerate(js):
            px = img[b][:, ok[b]]  # (C, n)
            total += px.sum(axis=1)
            count += px.shape[1]
            if lc_name is not None:
                lc = store.read_layer(lc_name, int(j))[0].astype(np.float64)
                sel = ok[b] & np.isfinite(lc)
                codes = np.round(lc[sel]).astype(np.int64)
                vals = img[b][:, sel]
                for code in np.unique(codes):
                    acc = per_class.setdefault(int(code), [np.zeros(len(bands)), 0])
                    acc[0] += vals[:, codes == code].sum(axis=1)
                    acc[1] += int((codes == code).sum())
            flat = np.flatnonzero(ok[b].ravel())
            take = rng.choice(flat, size=min(per_chip, flat.size), replace=False)
            rows.append(design[b].reshape(design.shape[1], -1)[:, take].T)
            pix.append(img[b].reshape(len(bands), -1)[:, take].T)
    if count == 0:
        raise InputError(f"{store_path}: no valid training pixel")
    means = {c: s / n for c, (s, n) in per_class.items() if n}
    mean = MeanImage(total / count, means, lc_name)
    return mean, LinearRelief(params).fit(np.concatenate(rows), np.concatenate(pix))


__all__ = [
    "RELIEF_CHANNELS",
    "LinearRelief",
    "MeanImage",
    "ReliefParams",
    "band_index",
    "fit_image_baselines",
    "landcover_layer",
    "relief_design",
]
