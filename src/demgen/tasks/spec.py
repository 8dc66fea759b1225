"""The task contract: what a task reads and writes, by name, channel and unit.

Every task exposes a :class:`TaskSpec` (``task.spec``, built from its hyperparameters) and
``task.predict_batch(inputs, valid)``. Prediction (:func:`demgen.inference.scene.predict_scene`),
the CLI (``demgen predict --input NAME=PATH``) and export (:mod:`demgen.export`) read the
spec and never a task's name, so a new task (DEM -> image, image + mask -> future image, a
sampler) needs no special case outside :mod:`demgen.tasks`.

- :class:`LayerSpec`: one named layer: its channels, band names (how its bands are found in a
  raster, by description), unit, whether it is relative (defined up to a per-window offset:
  the blender anchors it) and whether its holes are the task's to fill (``gaps``: not nodata
  in the outputs).
- :class:`TaskSpec`: the input layers (the first is the *grid layer*: outputs take its CRS,
  transform and size, and the other inputs are warped onto it), the output layers, the window
  side multiple the network needs, the default prediction window, and whether outputs are
  samples (``stochastic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Units a layer can carry. ``metre``: heights (outputs get the vertical datum tag);
#: ``reflectance``: image values as the files store them (DN or scaled reflectance);
#: ``class``: integer labels; ``probability``: 0..1; ``value``: anything else.
Unit = Literal["metre", "reflectance", "class", "probability", "value"]
UNITS: tuple[str, ...] = ("metre", "reflectance", "class", "probability", "value")
#: How an output layer can be written (see :attr:`LayerSpec.dtype`).
OUTPUT_DTYPES: tuple[str, ...] = ("float32", "uint16", "uint8")


@dataclass(frozen=True)
class LayerSpec:
    """One named layer of a task's inputs or outputs.

    Args:
        name: the layer's name (``image``, ``dtm``, ``initial_dsm``, ``ortho2`` ...): the key
            of ``predict_batch``'s dicts and of ``--input NAME=PATH``.
        channels: number of channels (bands).
        bands: one name per channel; a raster's bands are matched to them by description
            (a single-channel layer reads band 1 of a single-band raster whatever its name).
        unit: one of :data:`UNITS`.
        relative: the layer's values are defined up to an unknown per-window offset (per-chip
            height normalizations): outputs are anchored on a reference or chained by overlap.
        gaps: (inputs) the task fills this layer's holes itself, so they are not nodata in the
            outputs (the initial DSM of refinement).
        dtype: (outputs) how the layer is written: ``float32`` (nodata -9999) or an unsigned
            integer type (``uint16``, ``uint8``: values rounded and clipped to
            ``[1, max]``, nodata 0, the Sentinel-2 L2A convention), so a predicted image is
            stored like the images it learned from (uint16 reflectance x 10000).
    """

    name: str
    channels: int
    bands: tuple[str, ...]
    unit: Unit
    relative: bool = False
    gaps: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.channels != len(self.bands) or self.channels < 1:
            raise ValueError(f"layer {self.name!r}: {self.channels} channels, bands {self.bands}")
        if self.unit not in UNITS:
            raise ValueError(f"layer {self.name!r}: unit {self.unit!r} not in {UNITS}")
        if self.dtype not in OUTPUT_DTYPES:
            raise ValueError(f"layer {self.name!r}: dtype {self.dtype!r} not in {OUTPUT_DTYPES}")

    def to_dict(self) -> dict[str, object]:
        """JSON form (export sidecars, documentation)."""
        return {
            "name": self.name,
            "channels": self.channels,
            "bands": list(self.bands),
            "unit": self.unit,
            "relative": self.relative,
            "gaps": self.gaps,
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class TaskSpec:
    """What a task reads and writes.

    Args:
        inputs: the input layers; the first is the grid layer of prediction.
        outputs: the output layers, each written as its own GeoTIFF.
        window_multiple: window height and width must be multiples of this (inputs are
            reflect-padded up to it and outputs cropped back).
        window: the default prediction window side (px).
        stochastic: outputs are samples (two runs differ); TTA then averages samples too.
        dihedral: flipping or rotating the inputs flips or rotates the outputs the same way,
            so the 8-fold test-time augmentation is valid; False where the task knows a
            direction (DEM -> image: the sun), and prediction then refuses ``tta``.
        diffusion: outputs are drawn by iterative denoising: scene prediction samples all
            windows of a scene together, blending them at every step, from noise seeded by
            pixel (:mod:`demgen.inference.sampling`); there is no single-pass graph to export.
    """

    inputs: tuple[LayerSpec, ...]
    outputs: tuple[LayerSpec, ...]
    window_multiple: int
    window: int
    stochastic: bool = False
    dihedral: bool = True
    diffusion: bool = False

    def __post_init__(self) -> None:
        for kind, layers in (("input", self.inputs), ("output", self.outputs)):
            names = [la.name for la in layers]
            if not names or len(set(names)) != len(names):
                raise ValueError(f"{kind} layers must be named uniquely, got {names}")
        if self.window_multiple < 1 or self.window < 1:
            raise ValueError("window_multiple and window must be positive")

    @property
    def input_names(self) -> list[str]:
        return [la.name for la in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [la.name for la in self.outputs]

    def input(self, name: str) -> LayerSpec:
        """The input layer ``name``; KeyError naming the known ones."""
        for la in self.inputs:
            if la.name == name:
                return la
        raise KeyError(f"no input layer {name!r} (inputs: {self.input_names})")

    def to_dict(self) -> dict[str, object]:
        return {
            "inputs": [la.to_dict() for la in self.inputs],
            "outputs": [la.to_dict() for la in self.outputs],
            "window_multiple": self.window_multiple,
            "window": self.window,
            "stochastic": self.stochastic,
            "dihedral": self.dihedral,
            "diffusion": self.diffusion,
        }


__all__ = ["OUTPUT_DTYPES", "UNITS", "LayerSpec", "TaskSpec", "Unit"]
