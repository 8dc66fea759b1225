"""Turn rasters (or earlier ``.npz`` chip arrays) into a chip store with honest splits.

:func:`prepare_rasters` aligns imagery, DEMs, extra layers and cloud masks onto one grid
per scene (:mod:`demgen.data.align`), cuts chips strip by strip (one chip row of the grid
in memory at a time), drops chips with too many invalid pixels, splits the rest spatially
(:mod:`demgen.data.splits`), fits the named normalizations on the training split only
(:mod:`demgen.data.normalize`) and writes the store atomically (:mod:`demgen.data.chips`).
The manifest records the grid's pixel size in metres and the DEMs' vertical datum
(:mod:`demgen.data.geometa`), as strict JSON (NaN statistics become null).
:func:`prepare_npz` imports chip arrays without georeferencing into the same store format.
"""

from demgen.data.geometa import chip_area_km2, dems_vertical_crs, manifest_geodesy_line
from demgen.data.prepare.config import HEIGHT_EXTRAS, PrepareConfig, extra_kind
from demgen.data.prepare.npz import prepare_npz
from demgen.data.prepare.rasters import prepare_rasters

__all__ = [
    "HEIGHT_EXTRAS",
    "PrepareConfig",
    "chip_area_km2",
    "dems_vertical_crs",
    "extra_kind",
    "manifest_geodesy_line",
    "prepare_npz",
    "prepare_rasters",
]
