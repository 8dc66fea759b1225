"""Strict JSON for every file and ``--json`` output demgen writes.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON (RFC 8259) and
break other readers (``jq``, JavaScript's ``JSON.parse``). Non-finite floats become
``null`` here (PSNR of identical images, an R2 without variance); numpy scalars and
arrays become numbers and lists.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones and every non-finite float as None."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (``allow_nan=False`` after :func:`to_plain`)."""
    return json.dumps(to_plain(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict JSON, atomically."""
    from demgen.io.raster import write_text_atomic

    return write_text_atomic(path, dumps(obj) + "\n")
