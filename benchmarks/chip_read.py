"""Chip read throughput: .npy memory maps vs Zarr vs one .npz per chip vs GeoTIFF windows.

Random reads of N chips (4 x 256 x 256 uint16 image plus a float32 height chip), page
cache warm (each layout is read once before timing). The Zarr stores (one chip per chunk,
with zarr's default compressor and uncompressed) are measured only when ``zarr`` imports:
it is not a demgen dependency, so install it somewhere throwaway, e.g.
``pip install --no-deps --target /tmp/zarrlib zarr numcodecs donfig google-crc32c`` and
run with ``PYTHONPATH=/tmp/zarrlib``. Usage: python benchmarks/chip_read.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from demgen.io.raster import write_raster


def main(n: int = 600) -> None:
    rng = np.random.default_rng(0)
    c = 256
    side = int(np.ceil(np.sqrt(n)))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        img = rng.integers(0, 10000, (n, 4, c, c), dtype=np.uint16)
        hgt = rng.normal(500, 100, (n, c, c)).astype(np.float32)
        np.save(d / "image.npy", img)
        np.save(d / "elevation.npy", hgt)
        for i in range(n):
            np.savez(d / f"chip_{i}.npz", image=img[i], elevation=hgt[i])
        mosaic = np.zeros((4, side * c, side * c), np.uint16)
        mosaic_h = np.zeros((side * c, side * c), np.float32)
        for i in range(n):
            r, q = divmod(i, side)
            mosaic[:, r * c : (r + 1) * c, q * c : (q + 1) * c] = img[i]
            mosaic_h[r * c : (r + 1) * c, q * c : (q + 1) * c] = hgt[i]
        t = from_origin(0, 0, 10, 10)
        write_raster(d / "image.tif", mosaic, crs="EPSG:32633", transform=t)
        write_raster(d / "dem.tif", mosaic_h, crs="EPSG:32633", transform=t)
        try:
            import zarr
        except ImportError:
            zarr = None
            print("zarr is not importable: Zarr layouts skipped")
        zarr_stores = []
        if zarr is not None:
            for name, kw in (("zarr default", {}), ("zarr raw", {"compressors": None})):
                root = zarr.open_group(d / name.replace(" ", "_"), mode="w")
                zi = root.create_array(
                    "image", shape=img.shape, chunks=(1, 4, c, c), dtype=img.dtype, **kw
                )
                ze = root.create_array(
                    "elevation", shape=hgt.shape, chunks=(1, c, c), dtype=hgt.dtype, **kw
                )
                zi[:], ze[:] = img, hgt
                codecs = str(zi.compressors)
                zarr_stores.append((f"{name}", d / name.replace(" ", "_"), codecs))
        del img, hgt, mosaic, mosaic_h
        order = rng.permutation(n)

        def npy():
            im = np.load(d / "image.npy", mmap_mode="r")
            el = np.load(d / "elevation.npy", mmap_mode="r")
            for i in order:
                np.asarray(im[i]).sum(), np.asarray(el[i]).sum()

        def npz():
            for i in order:
                with np.load(d / f"chip_{i}.npz") as z:
                    z["image"].sum(), z["elevation"].sum()

        def tif():
            with rasterio.open(d / "image.tif") as a, rasterio.open(d / "dem.tif") as b:
                for i in order:
                    r, q = divmod(int(i), side)
                    w = Window(q * c, r * c, c, c)
                    a.read(window=w).sum(), b.read(1, window=w).sum()

        def zarr_reader(path):
            def read():
                root = zarr.open_group(path, mode="r")
                im, el = root["image"], root["elevation"]
                for i in order:
                    im[int(i)].sum(), el[int(i)].sum()

            return read

        layouts = [("npy memmap", npy)]
        for name, path, codecs in zarr_stores:
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            print(f"{name}: compressors {codecs}, {size / 2**20:.0f} MiB on disk")
            layouts.append((name, zarr_reader(path)))
        layouts += [("npz per chip", npz), ("GeoTIFF windows", tif)]
        for name, fn in layouts:
            fn()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            print(f"{name:16s} {n / dt:8.0f} chips/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600)
