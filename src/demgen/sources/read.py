"""Windowed reads of (Cloud-Optimized) GeoTIFF assets onto the target grid.

Each asset is opened once (local path or ``http(s)://`` URL, which GDAL reads with range
requests through ``/vsicurl/``) and wrapped in a ``WarpedVRT`` onto the download's grid:
a window of the grid then reads only the source blocks (and overview level) it needs.
Resampling follows demgen prepare's rule: average when the source pixels are at least
1.5 x finer than the grid's (shrinking), else bilinear; class layers (SCL, QA_PIXEL) are
always nearest. Pixels outside the source, and the source's nodata, come back invalid.

Network failures: GDAL itself retries HTTP 429/502/503/504 (``GDAL_HTTP_MAX_RETRY``,
``GDAL_HTTP_RETRY_DELAY``, doubling), and every open and read is retried again here with
the download's :class:`~demgen.sources.stac.RetryPolicy`; an asset that stays unreadable
raises :class:`~demgen.sources.stac.SourceUnavailable` naming it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from demgen.io.grid import Grid
from demgen.io.resampling import CONTINUOUS, shrink_factor
from demgen.io.resampling import resampling_for as rule
from demgen.sources.signing import NoSigning, Signing
from demgen.sources.stac import RetryPolicy, with_retries


def gdal_env(policy: RetryPolicy, timeout: float = 30.0) -> rasterio.Env:
    """GDAL settings for reading COGs over HTTP: retries, no directory listings, timeouts."""
    return rasterio.Env(
        GDAL_HTTP_MAX_RETRY=str(policy.retries),
        GDAL_HTTP_RETRY_DELAY=str(max(policy.backoff, 0.001)),
        GDAL_HTTP_TIMEOUT=str(int(max(1, timeout))),
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        GDAL_HTTP_MERGE_CONSECUTIVE_RANGES="YES",
        GDAL_HTTP_MULTIPLEX="YES",
        VSI_CACHE="TRUE",
        GDAL_CACHEMAX=256,
    )


def resampling_for(ds: Any, grid: Grid, categorical: bool) -> Resampling:
    """Nearest for classes; average when shrinking >= 1.5x; bilinear otherwise."""
    if categorical:
        return Resampling.nearest
    return rule(CONTINUOUS, shrink_factor(ds, grid))  # demgen.io.resampling


class AssetReader(contextlib.AbstractContextManager):
    """One asset warped onto ``grid``; ``read(window)`` gives (values, valid)."""

    def __init__(
        self,
        href: str,
        grid: Grid,
        *,
        categorical: bool = False,
        nodata: float | None = None,
        policy: RetryPolicy | None = None,
        signing: Signing | None = None,
        dtype: str = "float32",
    ) -> None:
        self.href, self.grid = href, grid
        self.policy = policy or RetryPolicy()
        self.signing = signing or NoSigning()
        self.categorical, self.dtype = categorical, dtype
        self._nodata = nodata
        self.ds: Any = None
        self.vrt: Any = None
        self.resampling: Resampling | None = None
        with_retries(self._open, self.policy, (RasterioError, OSError), f"asset {href}")

    def _open(self) -> None:
        self.close()
        self.ds = rasterio.open(self.signing.sign(self.href))
        src_nodata = self.ds.nodata if self._nodata is None else self._nodata
        self.nodata = src_nodata
        self.resampling = resampling_for(self.ds, self.grid, self.categorical)
        kw: dict[str, Any] = {}
        if src_nodata is not None:
            kw.update(src_nodata=src_nodata, nodata=src_nodata)
        self.vrt = WarpedVRT(
            self.ds,
            crs=self.grid.crs,
            transform=self.grid.transform,
            width=self.grid.width,
            height=self.grid.height,
            resampling=self.resampling,
            add_alpha=src_nodata is None,
            **kw,
        )

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(h, w) values of band 1 and (h, w) validity for ``window`` of the grid."""

        def once() -> tuple[np.ndarray, np.ndarray]:
            if self.vrt is None:
                self._open()
            try:
                data = self.vrt.read(1, window=window, out_dtype=self.dtype)
                if self.nodata is None:
                    valid = self.vrt.read(self.vrt.count, window=window) >= 128
                else:
                    valid = data != self.nodata
            except (RasterioError, OSError):
                self.close()  # reopen on the next try: a fresh connection
                raise
            if data.dtype.kind == "f":
                valid &= np.isfinite(data)
            return data, valid

        return with_retries(once, self.policy, (RasterioError, OSError), f"asset {self.href}")

    def close(self) -> None:
        if self.vrt is not None:
            self.vrt.close()
        if self.ds is not None:
            self.ds.close()
        self.vrt = self.ds = None

    def __exit__(self, *exc: Any) -> None:
        self.close()
