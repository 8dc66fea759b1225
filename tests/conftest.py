"""Shared fixtures: small georeferenced rasters made on the fly."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import from_origin

from demgen.io.raster import write_raster

UTM = "EPSG:32633"


@pytest.fixture
def transform():
    return from_origin(500_000.0, 5_200_000.0, 10.0, 10.0)


@pytest.fixture
def image_file(tmp_path, transform):
    """A 4-band uint16 image, 96 x 80 px, bands described B2 B3 B4 B8."""
    rng = np.random.default_rng(0)
    img = rng.integers(200, 4000, size=(4, 96, 80)).astype(np.uint16)
    path = tmp_path / "image.tif"
    write_raster(path, img, crs=UTM, transform=transform, descriptions=["B2", "B3", "B4", "B8"])
    return path


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: two threads on a shared 2-core machine run small
    convolutions up to ~20x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
