"""The chip store reader: the manifest, its named layers, memory-mapped arrays, splits and
normalizations (:class:`ChipStore`), and a one-screen summary of a store (:func:`summary`).

The layout and the design choices are described in :mod:`demgen.data.chips`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from demgen.data.normalize import norm_from_dict
from demgen.errors import InputError

FORMAT = "demgen-chips/1"
#: Arrays with a fixed meaning; any other array of a store's ``arrays`` is a layer of its own.
_CORE_ARRAYS = ("image", "elevation", "mask", "extra")


def _band_of(extra: dict[str, Any]) -> str:
    """``B2`` for the channel ``ortho2_B2`` of layer ``ortho2``; a single band's own name."""
    name, layer = extra["name"], extra.get("layer", extra["name"])
    return name.removeprefix(f"{layer}_") if name != layer else name


def layer_table(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The named layers of a store: the manifest's ``layers``, or (stores written before it
    existed) the table derived from its arrays, bands and extras."""
    if manifest.get("layers"):
        return {k: dict(v) for k, v in manifest["layers"].items()}
    arrays = manifest["arrays"]
    bands = list(manifest["bands"])
    target = str(manifest.get("target") or "elevation")
    table: dict[str, dict[str, Any]] = {
        "image": {"file": arrays["image"], "channels": len(bands), "bands": bands,
                  "unit": "reflectance", "kind": "image"},
        "elevation": {"file": arrays["elevation"], "channels": 1, "bands": [target],
                      "unit": "metre", "kind": "height"},
        "mask": {"file": arrays["mask"], "channels": 1, "bands": ["valid"], "unit": "class",
                 "kind": "mask"},
    }  # fmt: skip
    extras = manifest.get("extras") or [{"name": n} for n in manifest.get("extra_layers") or []]
    for i, e in enumerate(extras if "extra" in arrays else []):
        height = e.get("kind") == "height"
        entry = table.setdefault(e.get("layer", e["name"]), {
            "file": arrays["extra"], "channels": 0, "bands": [], "index": [],
            "unit": "metre" if height else "value", "kind": e.get("kind") or "value",
        })  # fmt: skip
        entry["channels"] += 1
        entry["bands"].append(_band_of(e))
        entry["index"].append(i)
    for key, file in arrays.items():
        if key not in _CORE_ARRAYS and key not in table:
            unit = "class" if "cover" in key or "class" in key else "value"
            table[key] = {"file": file, "channels": None, "bands": None, "unit": unit,
                          "kind": key}  # fmt: skip
    return table


class ChipStore:
    """Read a chip store: manifest, memory-mapped arrays, splits and normalizations."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise InputError(f"{self.path}: not a chip store (no manifest.json)")
        try:
            self.manifest: dict[str, Any] = json.loads(mf.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{mf}: unreadable manifest ({exc})") from exc
        if self.manifest.get("format") != FORMAT:
            raise InputError(f"{mf}: unknown format {self.manifest.get('format')!r}")
        self._open_arrays()

    def _open_arrays(self) -> None:
        arrays = self.manifest["arrays"]
        self._maps = {f: np.load(self.path / f, mmap_mode="r") for f in set(arrays.values())}
        self.image = self._maps[arrays["image"]]
        self.elevation = self._maps[arrays["elevation"]]
        self.mask = self._maps[arrays["mask"]]
        self.extra = self._maps[arrays["extra"]] if "extra" in arrays else None
        self.layers = layer_table(self.manifest)
        for entry in self.layers.values():  # arrays of their own: channels from the shape
            if entry.get("channels") is None:
                a = self._maps[entry["file"]]
                entry["channels"] = int(a.shape[1]) if a.ndim == 4 else 1
                entry["bands"] = [f"{entry['kind']}{i + 1}" for i in range(entry["channels"])]

    def layer(self, name: str) -> np.ndarray:
        """The memory map of layer ``name`` (see :attr:`layers`): (N, C, H, W) for image and
        extra layers (a view of ``extra.npy``'s channels), (N, H, W) for single-band arrays
        (elevation, mask). KeyError naming the store's layers."""
        entry = self.layers.get(name)
        if entry is None:
            raise KeyError(f"{self.path}: no layer {name!r} (layers: {sorted(self.layers)})")
        arr = self._maps[entry["file"]]
        idx = entry.get("index")
        if idx is None:
            return arr
        if idx == list(range(idx[0], idx[-1] + 1)):
            return arr[:, idx[0] : idx[-1] + 1]  # a slice: still a memory map
        return arr[:, idx]  # channels not adjacent: a copy

    def read_layer(self, name: str, j: int) -> np.ndarray:
        """Chip ``j`` of layer ``name`` as stored, (C, H, W)."""
        entry = self.layers.get(name)
        if entry is None:
            raise KeyError(f"{self.path}: no layer {name!r} (layers: {sorted(self.layers)})")
        a = np.array(self._maps[entry["file"]][j])
        if entry.get("index") is not None:
            a = a[entry["index"]]
        return a[None] if a.ndim == 2 else a

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into DataLoader workers (spawn/forkserver): send the path, not the arrays
        # (a pickled np.memmap is a full in-memory copy); the worker maps them again.
        return {"path": self.path, "manifest": self.manifest}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.manifest = state["path"], state["manifest"]
        self._open_arrays()

    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def bands(self) -> list[str]:
        return list(self.manifest["bands"])

    @property
    def chips(self) -> list[dict[str, Any]]:
        return self.manifest["chips"]

    @property
    def extras(self) -> list[dict[str, Any]]:
        """Name, kind ('height' or 'value') and unit of each layer of ``extra.npy``."""
        if "extras" in self.manifest:
            return list(self.manifest["extras"])
        return [{"name": n, "kind": None, "unit": None} for n in self.manifest["extra_layers"]]

    def indices(self, split: str, fold: int | None = None) -> np.ndarray:
        """Chip indices of ``split`` ('train', 'val', 'test'), or of a k-fold's train/test."""
        src = self.manifest["splits"] if fold is None else self.manifest["folds"][fold]
        if split not in src:
            raise KeyError(f"no split {split!r} (have {sorted(k for k in src if k != 'stats')})")
        return np.asarray(src[split], dtype=np.int64)

    def _norm_dicts(self, fold: int | None) -> dict[str, Any]:
        if fold is None:
            return self.manifest["normalization"]
        return self.manifest["folds"][fold]["normalization"]

    def image_norm(self, fold: int | None = None) -> Any:
        return norm_from_dict(self._norm_dicts(fold)["image"])

    def elevation_norm(self, fold: int | None = None) -> Any:
        return norm_from_dict(self._norm_dicts(fold)["elevation"])

    def offsets(self, norm: Any) -> np.ndarray:
        """Per-chip offsets (metres) the elevation normalization needs (zeros if global)."""
        col = {"min": 1, "mean": 3}.get(getattr(norm, "offset_stat", None) or "")
        if col is None:
            return np.zeros(len(self), np.float64)
        return np.array([c["z"][col] if c["z"][0] else np.nan for c in self.chips], np.float64)


def summary(store: ChipStore) -> str:
    """A human-readable summary: chips per split, bands, statistics, area covered."""
    m = store.manifest
    lines = [f"chip store {store.path}  ({m['format']})"]
    lines.append(
        f"chips: {m['count']} of {m['chip_size']} x {m['chip_size']} px, stride {m['stride']}"
        f"  (dropped {m.get('dropped_invalid', 0)} with more than "
        f"{m.get('max_invalid', 0):.0%} invalid pixels)"
    )
    sp = m["splits"]
    parts = [f"{k} {len(sp[k])}" for k in ("train", "val", "test", "excluded") if k in sp]
    lines.append(
        f"splits ({sp.get('strategy')}, seed {sp.get('seed')}): "
        + ", ".join(parts)
        + (f"; {len(m['folds'])} folds" if m.get("folds") else "")
    )
    lines.append(f"bands: {' '.join(m['bands'])}  (stored {m.get('image_dtype')})")
    lines.append(f"heights: {m.get('z_unit')}  (source unit: {m.get('z_source_unit')})")
    if store.extra is not None:
        parts = [
            f"{e['name']} ({e['kind']}, {e['unit']})" if e.get("kind") else e["name"]
            for e in store.extras
        ]
        lines.append("extra layers: " + ", ".join(parts))
    for kind in ("image", "elevation"):
        d = m["normalization"][kind]
        stats = {k: _short(v) for k, v in d.items() if k not in ("strategy", "bands")}
        lines.append(f"{kind} normalization: {d['strategy']}  {stats}")
    vf = [c["valid_fraction"] for c in store.chips]
    if vf:
        lines.append(f"valid pixels per chip: mean {np.mean(vf):.1%}, min {np.min(vf):.1%}")
    if m.get("area_km2") is not None:
        lines.append(
            f"area covered: {m['area_km2']:.3f} km2 in {len(m.get('scenes', []))} scene(s)"
        )
    for s in m.get("scenes", []):
        g = s.get("grid")
        if g:
            lines.append(f"  {s['name']}: {g['crs']}, {g['width']} x {g['height']} px")
        else:
            lines.append(f"  {s['name']}: not georeferenced")
    return "\n".join(lines)


def _short(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, list):
        return [_short(x) for x in v]
    return v
