"""Data in from the world: STAC search, windowed COG reads onto one grid, masks, composites.

One concept per module: :mod:`~demgen.sources.stac` (search, retries),
:mod:`~demgen.sources.signing` (asset signing), :mod:`~demgen.sources.products` (collections,
asset keys, reflectance scaling), :mod:`~demgen.sources.grid` (the target grid),
:mod:`~demgen.sources.read` (windowed reads), :mod:`~demgen.sources.masks` (SCL, QA_PIXEL),
:mod:`~demgen.sources.composite` (per-date mosaics, median) and
:mod:`~demgen.sources.download` (the orchestration, resume and provenance).
"""
