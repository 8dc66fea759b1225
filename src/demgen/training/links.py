"""What a data module gives the task it trains: its normalizations, chip size, pixel size,
vertical datum and a refinement task's input layers, as LightningCLI argument links
(:meth:`~demgen.training.cli.DemgenCLI.add_arguments_to_parser`), so configs never
hard-code statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from demgen.errors import InputError


def normalization_of(key: str) -> Callable[[Any], dict[str, Any]]:
    """A link function returning the data module's ``normalization[key]`` (image, elevation)."""

    def compute(dm: Any) -> dict[str, Any]:
        try:
            return dm.normalization[key]
        except AttributeError:
            raise InputError(
                f"data module {type(dm).__name__} has no chip-store normalization; use "
                "demgen.data.datamodule.ChipDataModule or SynthWorldDataModule"
            ) from None

    return compute


def chip_size_of(dm: Any) -> int:
    """The chip size of the data module's store, linked into the task's ``chip_size``."""
    store = getattr(dm, "store", None)
    if store is None:
        raise InputError(f"data module {type(dm).__name__} has no chip store")
    return int(store.manifest["chip_size"])


def store_pixel_size(dm: Any) -> float | None:
    """The data module's pixel size in metres (``ChipDataModule.pixel_size``), linked into the
    task's ``pixel_size`` so ``demgen predict`` refuses images of another resolution; None
    (no check) for ungeoreferenced stores and data modules without one."""
    size = getattr(dm, "pixel_size", None)
    return float(size) if size else None


def store_vertical_crs(dm: Any) -> str:
    """The vertical datum of the data module's heights (``unknown`` where not declared),
    linked into the task's ``vertical_crs``."""
    return str(getattr(dm, "vertical_crs", None) or "unknown")


def store_image_dtype(dm: Any) -> str:
    """How the store's images are stored (``uint16``, ``uint8``, ``float32``), linked into an
    image-output task's ``image_dtype`` so its predictions are written the same way."""
    store = getattr(dm, "store", None)
    dtype = store.manifest.get("image_dtype") if store is not None else None
    return str(dtype or "float32")


def extras_of(dm: Any) -> list[dict[str, Any]]:
    """The store's extra-layer entries (none without a store), linked into ``extras``."""
    store = getattr(dm, "store", None)
    return list(store.extras) if store is not None else []


def input_norms_of(dm: Any) -> dict[str, dict[str, Any]]:
    """Normalizations of every input a refinement task can stack from this store (the
    anchor, the image, the nodata mask and each extra layer), fitted on its training split."""
    store = getattr(dm, "store", None)
    if store is None or not store.extras:
        return {}
    from demgen.tasks.refine import ANCHOR, NODATA_MASK, ORTHO1, fit_input_norms

    layers = dict.fromkeys(e.get("layer", e["name"]) for e in store.extras)
    names = [ANCHOR, ORTHO1, NODATA_MASK, *(n for n in layers if n != ANCHOR)]
    if ANCHOR not in layers:
        names.remove(ANCHOR)
    return fit_input_norms(store, names, getattr(dm, "fold", None))
