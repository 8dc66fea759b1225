"""The chip store: aligned chips on disk as memory-mapped arrays, with one JSON manifest.

Layout of a store folder::

    manifest.json   bands, units, CRS, per-chip provenance and height statistics,
                    valid fractions, normalization statistics, splits (and k folds)
    image.npy       (N, C, H, W) image values as stored by the source (DN, reflectance...)
    elevation.npy   (N, H, W) float32 heights in metres (NaN where invalid)
    mask.npy        (N, H, W) bool, True where the pixel is valid
    extra.npy       (N, E, H, W) float32 extra layers (refinement inputs), when given:
                    height layers (an initial DSM) in metres, others as the source stores
                    them, NaN where invalid; the manifest's ``extras`` gives each one's
                    name, kind (``height`` or ``value``) and unit

**Named layers.** The manifest's ``layers`` table names every layer the store holds:
``{name: {file, channels, bands, unit, kind}}`` for ``image`` (unit ``reflectance``: the
stored values), ``elevation`` (its band is the target, ``dtm`` or ``dsm`` where the store
records it; unit ``metre``), ``mask`` and each extra layer (a multi-band extra such as
``ortho2`` is one layer whose ``index`` lists its channels of ``extra.npy``); any other array
(land cover) is listed under its own name. Stores written before the table existed derive it
from their manifest (:func:`layer_table`). :meth:`ChipStore.layer` returns a layer's memory
map, and :class:`ChipDataset` serves any layers as inputs and targets (``inputs=``,
``targets=``), so "DEM to image" is the same store with the roles swapped.

Heights are stored raw (metres) and normalized at read time from the manifest, so a
normalized target turns back into metres (to float32 precision) with the stored
statistics. Arrays are written sequentially with plain file writes (no memory map while
writing, so resident memory stays small) and read with ``np.load(mmap_mode="r")``: a
sample is a slice of an already open map, never a file open.

Storage choice, measured with ``benchmarks/chip_read.py`` on this machine (2 CPU cores,
local disk, warm page cache): random reads of 600 chips, each a 4 x 256 x 256 uint16
image plus a float32 height chip (``PYTHONPATH=/tmp/zarrlib python
benchmarks/chip_read.py``, zarr 3.1.6 installed only in a throwaway folder):

- ``.npy`` memory maps (this store):                         6,281 chips/s
- Zarr, one chip per chunk, default compressor (Zstd level 0):  303 chips/s
- Zarr, one chip per chunk, uncompressed:                        753 chips/s
- one ``.npz`` file per chip (a file open each):               1,081 chips/s
  (615 in an earlier run: file opens vary with the machine's load)
- windowed reads of a tiled deflate GeoTIFF:                     305 chips/s

Zarr pays a chunk-file open and a codec pass per chip even uncompressed, and its
compression saved little on these (random) chips: 406 MiB against 450 MiB raw. Real
imagery compresses better, so Zarr would cost less disk, but every read would still pay
the decompression on the training loop's critical path; the memory maps read about 8 to 20
times faster and need no extra dependency, so the store uses them. They are uncompressed:
a store takes about as much disk as the chips hold (2 bytes x bands + 5 bytes per pixel
for uint16, plus 4 bytes per pixel per extra layer).

Store creation is atomic: everything is written in a temporary sibling folder renamed into
place at the end; on any error that folder is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from demgen.data.augment import SPATIAL_KEYS, dihedral, draw_code
from demgen.data.fill import fill_invalid, image_fill_value
from demgen.data.normalize import norm_from_dict
from demgen.errors import InputError

FORMAT = "demgen-chips/1"
_HEADER_BYTES = 256  # fixed .npy header size, so the chip count can be patched at the end


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header of exactly ``_HEADER_BYTES`` bytes."""
    d = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(s) for s in shape),
    }
    text = repr(d).encode("latin1")
    pad = _HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise ValueError("npy header too long")
    body = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


class _NpyAppender:
    """Append fixed-shape records to a .npy file; the leading dimension is set on close."""

    def __init__(self, path: Path, dtype: Any, record_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(record_shape)
        self.n = 0
        self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.f.write(_npy_header(self.dtype, (0, *self.shape)))

    def append(self, record: np.ndarray) -> None:
        arr = np.ascontiguousarray(record, dtype=self.dtype)
        if arr.shape != self.shape:
            raise ValueError(f"record shape {arr.shape} != {self.shape}")
        self.f.write(arr.tobytes())
        self.n += 1

    def close(self) -> None:
        if self.f.closed:
            return
        self.f.seek(0)
        self.f.write(_npy_header(self.dtype, (self.n, *self.shape)))
        self.f.close()


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


class ChipStoreWriter:
    """Write chips into a temporary folder beside ``out``; :meth:`commit` renames it into place.

    Use as a context manager: leaving the block without ``commit`` (an error, Ctrl-C)
    removes the temporary folder, so no half-written store is ever left behind.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        chip_size: int,
        bands: list[str],
        image_dtype: Any,
        n_extra: int = 0,
        overwrite: bool = False,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise InputError(f"{self.out}: already exists (pass --overwrite to replace it)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.with_name(f".{self.out.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.tmp.mkdir()
        c = chip_size
        self.bands = list(bands)
        self.image_dtype = np.dtype(image_dtype)
        self._image = _NpyAppender(self.tmp / "image.npy", image_dtype, (len(bands), c, c))
        self._height = _NpyAppender(self.tmp / "elevation.npy", np.float32, (c, c))
        self._mask = _NpyAppender(self.tmp / "mask.npy", np.bool_, (c, c))
        self._extra = (
            _NpyAppender(self.tmp / "extra.npy", np.float32, (n_extra, c, c)) if n_extra else None
        )
        self.chips: list[dict[str, Any]] = []
        self.committed = False

    def __enter__(self) -> ChipStoreWriter:
        return self

    def add(
        self,
        image: np.ndarray,
        height: np.ndarray,
        mask: np.ndarray,
        info: dict[str, Any],
        extra: np.ndarray | None = None,
    ) -> int:
        """Append one chip (heights in metres, NaN where ``mask`` is False); returns its index."""
        height = np.where(mask, height, np.nan).astype(np.float32)
        self._image.append(image)
        self._height.append(height)
        self._mask.append(mask)
        if self._extra is not None:
            self._extra.append(extra)
        v = height[mask].astype(np.float64)
        z = (
            [int(v.size), *(float(f(v)) for f in (np.min, np.max, np.mean, np.std))]
            if v.size
            else [0] + [None] * 4
        )
        self.chips.append({**info, "valid_fraction": round(float(mask.mean()), 6), "z": z})
        return len(self.chips) - 1

    def _close_arrays(self) -> None:
        for a in (self._image, self._height, self._mask, self._extra):
            if a is not None:
                a.close()

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest and move the store into place (replacing an old one)."""
        self._close_arrays()
        arrays = {"image": "image.npy", "elevation": "elevation.npy", "mask": "mask.npy"}
        if self._extra is not None:
            arrays["extra"] = "extra.npy"
        full = {
            "format": FORMAT,
            "count": len(self.chips),
            "bands": self.bands,
            "arrays": arrays,
            **manifest,
            "chips": self.chips,
        }
        full["layers"] = layer_table(full)
        (self.tmp / "manifest.json").write_text(json.dumps(full, indent=1) + "\n")
        if self.out.exists():
            trash = self.out.with_name(f".{self.out.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(self.out, trash)
            os.replace(self.tmp, self.out)
            if trash.is_dir():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink(missing_ok=True)
        else:
            os.replace(self.tmp, self.out)
        self.committed = True
        return self.out

    def abort(self) -> None:
        self._close_arrays()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, *exc: Any) -> None:
        if not self.committed:
            self.abort()


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


class ChipDataset(Dataset):
    """Normalized chips of one split: ``dict(image, target, mask, offset, index)`` tensors.

    ``image`` (C, H, W) float32 and ``target`` (1, H, W) float32 are normalized with the
    store's (or fold's) training statistics; ``mask`` (1, H, W) bool marks valid pixels (the
    target is 0 where it is False: losses and metrics must ignore those). The store keeps
    one mask for image and heights, and chips may keep up to ``--max-invalid`` invalid
    pixels whose stored image values are NaN or a nodata value: every image value where
    ``mask`` is False, or that is not finite, is replaced by :func:`image_fill_value` (the
    fill prediction uses for invalid input pixels), so no NaN reaches a network and what
    invalid pixels held changes nothing. ``offset`` is the
    chip's offset in metres for per-chip strategies, so ``norm.inverse(target, offset)``
    gives metres. ``augment=True`` applies a joint random flip/rotation (one of the 8 of
    :mod:`demgen.data.augment`), reproducible from ``seed``, the epoch (:meth:`set_epoch`)
    and the index; with ``seed=None`` it is drawn from torch's RNG instead (new every epoch,
    in every DataLoader worker, and governed by ``torch.manual_seed``/``seed_everything``).
    ``defer_augment=True`` only draws it, as ``aug`` (the code), for
    :func:`demgen.data.augment.apply_batch` to apply to the whole batch on its device.
    ``extra=True`` adds ``extra`` (E, H, W) float32: the store's extra layers as stored
    (heights in metres, see :attr:`ChipStore.extras`), 0 where ``mask`` is False so no NaN
    reaches a network, and ``extra_valid`` (E, H, W) bool, False there and in a layer's own
    gaps (``--extra-gaps``, e.g. the holes of an initial DSM, also 0 in ``extra``).

    **Named roles.** ``inputs`` and ``targets`` (layer names of :attr:`ChipStore.layers`)
    choose what is learnt from what: with either given, ``input`` is the input layers stacked
    (C_in, H, W) and ``target`` the target layers stacked (C_out, H, W), each layer as
    :meth:`layer_tensor` serves it (``image`` and ``elevation`` normalized with the stored
    statistics, the image filled and the heights 0 where invalid). Defaults: inputs ``image``,
    targets ``elevation``, so ``target`` is then what it always was; without either, no
    ``input`` key is added (today's batch, unchanged). The other keys stay.
    """

    def __init__(
        self,
        store: ChipStore | str | Path,
        split: str = "train",
        *,
        fold: int | None = None,
        augment: bool = False,
        seed: int | None = 0,
        extra: bool = False,
        defer_augment: bool = False,
        inputs: list[str] | None = None,
        targets: list[str] | None = None,
    ) -> None:
        self.store = store if isinstance(store, ChipStore) else ChipStore(store)
        self.named = inputs is not None or targets is not None
        self.inputs = list(inputs) if inputs is not None else ["image"]
        self.targets = list(targets) if targets is not None else ["elevation"]
        unknown = [n for n in self.inputs + self.targets if n not in self.store.layers]
        if unknown:
            raise InputError(f"{self.store.path}: no layer {unknown[0]!r} "
                             f"(layers: {', '.join(self.store.layers)})")  # fmt: skip
        self.idx = self.store.indices(split, fold)
        self.image_norm = self.store.image_norm(fold)
        self.elevation_norm = self.store.elevation_norm(fold)
        self.offsets = self.store.offsets(self.elevation_norm)
        self.fill = image_fill_value(self.image_norm)
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.defer_augment = defer_augment
        self.with_extra = extra and self.store.extra is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.idx[i])
        s = self.store
        arrs = [np.array(s.image[j]), np.array(s.elevation[j]), np.array(s.mask[j])]
        if self.with_extra:
            arrs.append(np.array(s.extra[j]))
        img, hgt, val = arrs[:3]
        off = float(self.offsets[j]) if np.isfinite(self.offsets[j]) else 0.0
        x = self.image_norm.apply(img.astype(np.float32))
        x = fill_invalid(np.asarray(x, np.float32), val[None], self.fill)
        y = self.elevation_norm.forward(hgt.astype(np.float64), off)
        y = np.where(val, y, 0.0).astype(np.float32)
        out = {
            "image": torch.from_numpy(np.asarray(x, np.float32)),
            "target": torch.from_numpy(y)[None],
            "mask": torch.from_numpy(np.ascontiguousarray(val))[None],
            "offset": torch.tensor(off, dtype=torch.float64),
            "index": torch.tensor(j),
        }
        if self.with_extra:
            ok = val[None] & np.isfinite(arrs[3])
            out["extra"] = torch.from_numpy(np.where(ok, arrs[3], 0.0).astype(np.float32))
            out["extra_valid"] = torch.from_numpy(ok)
        if self.named:
            served = {"image": out["image"], "elevation": out["target"]}
            out["input"] = torch.cat([self.layer_tensor(n, j, val, served) for n in self.inputs])
            out["target"] = torch.cat([self.layer_tensor(n, j, val, served)
                                       for n in self.targets])  # fmt: skip
        if self.augment:
            rng = None if self.seed is None else np.random.default_rng((self.seed, self.epoch, j))
            code = draw_code(rng)
            if self.defer_augment:  # applied to the whole batch by the data module
                out["aug"] = torch.tensor(code)
            else:
                for k in (*SPATIAL_KEYS, "input"):
                    if k in out:
                        out[k] = dihedral(out[k], code).contiguous()
        return out

    def layer_tensor(
        self, name: str, j: int, valid: np.ndarray, served: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Layer ``name`` of chip ``j`` as a (C, H, W) float32 tensor: ``image`` and
        ``elevation`` as the dataset normalizes them (``served``), ``mask`` as 0/1, any other
        layer as stored (extras: heights in metres) with 0 where ``valid`` is False or the
        value is not finite."""
        if name in served:
            return served[name]
        if name == "mask":
            return torch.from_numpy(valid[None].astype(np.float32))
        a = self.store.read_layer(name, j).astype(np.float32)
        return torch.from_numpy(np.where(valid[None] & np.isfinite(a), a, 0.0).astype(np.float32))


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
