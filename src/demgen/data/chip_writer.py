"""Writing a chip store: chips appended to .npy files in a temporary folder beside the
store, renamed into place by :meth:`ChipStoreWriter.commit` (layout: :mod:`demgen.data.chips`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from demgen.data.store import FORMAT, layer_table
from demgen.errors import InputError

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
