"""The named inputs of refinement (:class:`~demgen.tasks.refine.RefineTask`): which store
channels make up each input, how each is normalized (fitted on the training split), the gap
filling of the initial DSM, and each input's :class:`~demgen.tasks.spec.LayerSpec`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from demgen.tasks.spec import LayerSpec

#: The layer the correction is added to (the residual anchor).
ANCHOR = "initial_dsm"
#: The image bands served by the chip store as ``batch["image"]`` go by this input name.
ORTHO1 = "ortho1"
#: A channel that is 1 in the anchor's holes (and wherever the chip is invalid), else 0.
NODATA_MASK = "nodata_mask"
DEFAULT_INPUTS = (ANCHOR, ORTHO1, "ortho2", "triangulation_error", NODATA_MASK)
#: Chips sampled from the training split to fit the z-score of value layers.
FIT_CHIPS = 64


def _layer_channels(extras: Sequence[dict[str, Any]], name: str) -> list[int]:
    """Indices of the store's extra channels that make up input ``name``.

    A single-band layer is matched by its ``name``; a multi-band one (``ortho2`` stored as
    ``ortho2_B2`` ... ``ortho2_B8``) by its ``layer``.
    """
    idx = [i for i, e in enumerate(extras) if e.get("layer", e["name"]) == name]
    return idx or [i for i, e in enumerate(extras) if e["name"] == name]


def fit_input_norms(
    store: Any, inputs: Sequence[str] = DEFAULT_INPUTS, fold: int | None = None
) -> dict[str, dict[str, Any]]:
    """How each named input is normalized, fitted on the store's training split.

    Strategies: ``residual`` (the anchor: ``(h - chip mean of the anchor) / GSF``),
    ``image`` (the store's image normalization: ``ortho1`` and extra layers with as many bands
    as the image, e.g. a second ortho of the same sensor), ``relative`` (other height layers:
    ``(h - anchor chip mean) / GSF``), ``mask`` (``nodata_mask``) and ``zscore`` (other value
    layers, e.g. triangulation error or NDVI: per-channel mean and std of valid training
    pixels).
    """
    extras = store.extras
    n_bands = len(store.bands)
    train = store.indices("train", fold)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(train, min(FIT_CHIPS, len(train)), replace=False))
    out: dict[str, dict[str, Any]] = {}
    for name in inputs:
        if name == ANCHOR:
            out[name] = {"strategy": "residual"}
        elif name == ORTHO1:
            out[name] = {"strategy": "image"}
        elif name == NODATA_MASK:
            out[name] = {"strategy": "mask"}
        else:
            ch = _layer_channels(extras, name)
            if not ch:
                have = ", ".join(e["name"] for e in extras) or "none"
                raise ValueError(f"{store.path}: no extra layer {name!r} (extra layers: {have})")
            if extras[ch[0]].get("kind") == "height":
                out[name] = {"strategy": "relative"}
            elif len(ch) == n_bands and len(ch) > 1:
                out[name] = {"strategy": "image"}
            else:
                mean, std = [], []
                for c in ch:
                    v = np.asarray(store.extra[sample, c], np.float64)
                    v = v[np.isfinite(v) & np.asarray(store.mask[sample], bool)]
                    mean.append(float(v.mean()) if v.size else 0.0)
                    std.append(float(max(v.std(), 1e-6)) if v.size else 1.0)
                out[name] = {"strategy": "zscore", "mean": mean, "std": std}
    return out


def fill_gaps(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill the gaps of (B, 1, H, W) ``values`` from coarser and coarser block means.

    Each invalid pixel takes the mean of the valid pixels of the smallest dyadic block
    (2, 4, 8 ... pixels) around it that has any; a chip without valid pixels stays 0. A cheap
    stand-in for the interpolated hole filling of DeepDEM's inputs, identical at inference.
    """
    v = torch.where(valid, values, 0.0)
    w = valid.to(values.dtype)
    out, have = v, valid
    h, wd = values.shape[-2:]
    s = 2
    while not bool(have.all()) and s < 2 * max(h, wd):
        num = F.avg_pool2d(v, s, s, ceil_mode=True)
        den = F.avg_pool2d(w, s, s, ceil_mode=True)
        est = F.interpolate(num / den.clamp(min=1e-12), scale_factor=s, mode="nearest")
        ok = F.interpolate((den > 0).to(values.dtype), scale_factor=s, mode="nearest") > 0
        est, ok = est[..., :h, :wd], ok[..., :h, :wd]
        new = ~have & ok
        out = torch.where(new, est, out)
        have = have | new
        s *= 2
    return out


def band_name(extra: dict[str, Any]) -> str:
    """The band name of one store channel within its layer: ``B2`` for ``ortho2_B2`` of layer
    ``ortho2``, the channel's own name for a single-band layer."""
    name, layer = extra["name"], extra.get("layer", extra["name"])
    return name.removeprefix(f"{layer}_") if name != layer else name


def extra_layer_spec(
    name: str, strategy: str, extras: Sequence[dict[str, Any]], channels: Sequence[int]
) -> LayerSpec:
    """The input layer ``name`` made of store channels ``channels``: metres for height layers,
    reflectance for image-normalized ones (a second ortho), else values; ``gaps`` where the
    store marks the layer's holes as the task's to fill (the initial DSM)."""
    es = [extras[c] for c in channels]
    if es[0].get("kind") == "height":
        unit = "metre"
    elif strategy == "image":
        unit = "reflectance"
    else:
        unit = "value"
    bands = tuple(band_name(e) for e in es)
    gaps = any(bool(e.get("gaps", False)) for e in es)
    return LayerSpec(name, len(es), bands, unit, gaps=gaps)


#: How each refinement input normalization is computed (export sidecars).
NORM_FORMULAS = {
    "residual": "(h - m) / gsf, m the mean of the initial DSM's valid pixels in the window; "
    "holes filled from surrounding block means before normalizing",
    "relative": "(h - m) / gsf, m as for the initial DSM; 0 where invalid",
    "image": "as image_norm; 0 where invalid",
    "mask": "1 where the initial DSM has no value, else 0",
    "zscore": "(v - mean[channel]) / std[channel]; 0 where invalid",
}
