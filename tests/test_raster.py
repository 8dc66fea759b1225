import numpy as np
import pytest
import rasterio

from demgen.errors import InputError
from demgen.io.raster import atomic_path, read_raster, same_grid, write_raster


def test_roundtrip_keeps_values_and_georeferencing(tmp_path, transform):
    arr = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    path = write_raster(
        tmp_path / "a.tif", arr, crs="EPSG:32633", transform=transform, nodata=-9999.0,
        descriptions=["dtm"], units=["metre"],
    )  # fmt: skip
    back, prof = read_raster(path)
    np.testing.assert_array_equal(back[0], arr)
    assert prof["crs"].to_epsg() == 32633
    assert prof["transform"] == transform
    assert prof["descriptions"] == ["dtm"]
    with rasterio.open(path) as ds:
        assert ds.units == ("metre",)
        assert ds.nodata == -9999.0


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_read_errors_name_the_file(tmp_path, transform):
    with pytest.raises(InputError, match="no such file"):
        read_raster(tmp_path / "missing.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="junk.tif"):
        read_raster(junk)
    nocrs = write_raster(tmp_path / "nocrs.tif", np.zeros((8, 8), np.uint8), crs=None,
                         transform=transform)  # fmt: skip
    with pytest.raises(InputError, match="no CRS"):
        read_raster(nocrs)
    ok = write_raster(tmp_path / "ok.tif", np.zeros((8, 8), np.uint8), crs="EPSG:32633",
                      transform=transform)  # fmt: skip
    with pytest.raises(InputError, match="band 3 does not exist"):
        read_raster(ok, bands=[3])


def test_same_grid(transform):
    a = {"width": 10, "height": 10, "crs": "EPSG:32633", "transform": transform}
    assert same_grid(a, dict(a))
    assert not same_grid(a, {**a, "crs": "EPSG:32634"})
    assert not same_grid(a, {**a, "width": 11})
    shifted = transform @ transform.translation(0.5, 0)
    assert not same_grid(a, {**a, "transform": shifted})
