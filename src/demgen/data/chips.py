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

This module is the store's public face; the code lives in :mod:`demgen.data.store` (the
reader and the layer table), :mod:`demgen.data.chip_writer` (the writer) and
:mod:`demgen.data.datasets` (the torch dataset).
"""

from demgen.data.chip_writer import ChipStoreWriter
from demgen.data.datasets import ChipDataset
from demgen.data.fill import fill_invalid, image_fill_value
from demgen.data.store import FORMAT, ChipStore, layer_table, summary

__all__ = [
    "FORMAT",
    "ChipDataset",
    "ChipStore",
    "ChipStoreWriter",
    "fill_invalid",
    "image_fill_value",
    "layer_table",
    "summary",
]
