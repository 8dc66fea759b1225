"""``demgen download``: search a STAC API, read the assets onto one grid, write what prepare reads.

Outputs in ``OUT`` (all on the grid of :mod:`demgen.sources.grid`):

- ``image.tif``: uint16 reflectance x 10000 (as ``demgen synth`` writes), bands B2 B3 B4 B8
  (Sentinel-2) or B2 B3 B4 B5 (Landsat 8/9 OLI), nodata 0, the scale (1e-4) and offset (0)
  to reflectance recorded as the bands' GDAL scale/offset and as tags. With ``--composite
  median`` (default) the per-pixel median over the clear dates; with ``--composite none``
  one ``OUT/<YYYY-MM-DD>/image.tif`` per date instead (clear pixels only).
- ``cloud_mask.tif`` (or ``OUT/<date>/cloud_mask.tif``): uint8 band 1 the mask code
  (0 clear; :mod:`demgen.sources.masks`), band 2 (composite) the number of clear dates.
  ``demgen prepare --cloud-mask`` treats every non-zero band-1 pixel as invalid.
- ``dem.tif``: float32 metres, nodata -9999, ``vertical_crs`` tag ("EGM2008 height" for
  the Copernicus DEM), the tiles mosaicked (first valid wins).
- ``provenance.json``: the request, the grid, every item used (id, collection, date,
  cloud cover, asset hrefs, the reflectance scale and offset applied), the items rejected
  on the client and why, the mask classes, and each output with its completion record.

Never half-done: every file is written under a temporary name and renamed when complete
(:func:`demgen.io.raster.open_writer`); ``provenance.json`` records the search results
and, after each output, that it is complete with its size. A second run of the same
request reuses the recorded search (no STAC request) and skips every complete output
(no asset read); another request into the same folder is refused unless ``overwrite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from demgen import __version__
from demgen.io.geodesy import VERTICAL_CRS_TAG
from demgen.io.raster import NODATA, geotiff_profile, open_writer
from demgen.sources import masks
from demgen.sources.composite import median_composite, mosaic_date, to_uint16
from demgen.sources.grid import windows
from demgen.sources.products import (
    COPDEM_VERTICAL_CRS,
    Product,
)
from demgen.sources.provenance import FORMAT, Provenance
from demgen.sources.read import AssetReader, gdal_env
from demgen.sources.request import COMPOSITES, DownloadOptions, DownloadRequest, grid_for
from demgen.sources.signing import make_signing

DEM_NODATA = NODATA  # demgen.io.raster's, under the name this module has always used

__all__ = [
    "COMPOSITES",
    "DEM_NODATA",
    "FORMAT",
    "DownloadOptions",
    "DownloadRequest",
    "download",
    "grid_for",
]


class _Run(Provenance):
    """One download into ``out``: the output writers, on the bookkeeping of
    :class:`~demgen.sources.provenance.Provenance`."""

    def __init__(self, req: DownloadRequest, out: Path, opts: DownloadOptions) -> None:
        self.signing = opts.signing or make_signing(req.sign, opts.retry, opts.token_url)
        super().__init__(req, out, opts)

    # -- imagery -------------------------------------------------------------------------
    def readers(self, product: Product, item: dict[str, Any], cache: dict) -> list[AssetReader]:
        if item["id"] not in cache:
            kw = {"policy": self.opts.retry, "signing": self.signing}
            rs = [
                AssetReader(item["assets"][b.name], self.grid, nodata=product.source_nodata, **kw)
                for b in product.bands
            ]
            assert product.mask is not None
            mask_nodata = 1.0 if product.mask_kind == "qa_pixel" else 0.0
            rs.append(
                AssetReader(
                    item["assets"][product.mask.name],
                    self.grid,
                    categorical=True,
                    nodata=mask_nodata,
                    dtype="uint16",
                    **kw,
                )
            )
            cache[item["id"]] = rs
        return cache[item["id"]]

    def read_item(
        self, product: Product, item: dict[str, Any], window: Any, cache: dict
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, h, w) reflectance x 10000 (NaN where not clear) and (h, w) mask codes."""
        rs = self.readers(product, item, cache)
        scale, offset = item["reflectance"]["scale"], item["reflectance"]["offset"]
        bands, ok = [], None
        for r in rs[:-1]:
            dn, valid = r.read(window)
            bands.append((dn * np.float32(scale) + np.float32(offset)) * np.float32(1e4))
            ok = valid if ok is None else ok & valid
        raw, mvalid = rs[-1].read(window)
        fn = masks.scl_mask if product.mask_kind == "scl" else masks.qa_pixel_mask
        code = fn(raw, snow=self.req.mask_snow)
        code[~(ok & mvalid)] = masks.NODATA
        vals = np.stack(bands).astype(np.float32)
        vals[:, code != masks.CLEAR] = np.nan
        return vals, code

    def image_profile(self, count: int, dtype: str, nodata: float | None) -> dict[str, Any]:
        g = self.grid
        return geotiff_profile(
            width=g.width, height=g.height, count=count, dtype=dtype, crs=g.crs,
            transform=g.transform, nodata=nodata,
        )  # fmt: skip

    def image_tags(self, product: Product, dates: list[str]) -> dict[str, str]:
        return {
            "reflectance_scale": "0.0001",
            "reflectance_offset": "0",
            "values": "surface reflectance x 10000 (scale and offset applied to the source)",
            "source": f"{product.collection} via {self.req.stac_url}",
            "composite": self.req.composite,
            "dates": " ".join(dates),
            "created_by": f"demgen {__version__}",
        }

    def mask_tags(self) -> dict[str, str]:
        return {
            "codes": ", ".join(f"{k} {v}" for k, v in masks.CODES.items()),
            "invalid": "band 1 != 0",
        }

    def write_image(self, product: Product, items: list[dict[str, Any]], rel: str, dates: dict):
        """Write ``rel``/image.tif and cloud_mask.tif from ``dates`` (date -> items)."""
        from tqdm import tqdm

        names = [str(Path(rel) / "image.tif"), str(Path(rel) / "cloud_mask.tif")]
        wins = list(windows(self.grid, self.opts.window))
        total = sum(len(v) for v in dates.values()) * len(wins)
        nb = len(product.bands)
        cache: dict[str, list[AssetReader]] = {}
        median = self.req.composite == "median"
        bar = tqdm(
            total=total, desc=f"{product.name} {rel if rel != '.' else 'composite'}",
            unit="read", disable=not self.opts.progress, leave=False,
        )  # fmt: skip
        try:
            with (
                open_writer(
                    self.out / names[0],
                    self.image_profile(nb, "uint16", 0),
                    descriptions=[b.name for b in product.bands],
                    units=["reflectance x 10000"] * nb,
                    tags=self.image_tags(product, list(dates)),
                ) as img,
                open_writer(
                    self.out / names[1],
                    self.image_profile(2 if median else 1, "uint8", None),
                    descriptions=["mask", "clear_dates"] if median else ["mask"],
                    tags=self.mask_tags(),
                ) as msk,
            ):
                img.scales = [1e-4] * nb
                img.offsets = [0.0] * nb
                for w in wins:
                    per_date, codes = [], []
                    for group in dates.values():
                        got = []
                        for it in group:
                            got.append(self.read_item(product, it, w, cache))
                            bar.update(1)
                        v, c = mosaic_date([g[0] for g in got], [g[1] for g in got])
                        per_date.append(v)
                        codes.append(c)
                    if median:
                        vals, count = median_composite(np.stack(per_date))
                        stacked = np.stack(codes).astype(np.int16)
                        stacked[stacked == masks.NODATA] = 255
                        code = np.where(count > 0, masks.CLEAR, stacked.min(axis=0))
                        code[code == 255] = masks.NODATA
                        msk.write(np.stack([code, count]).astype(np.uint8), window=w)
                    else:
                        vals, code = per_date[0], codes[0]
                        msk.write(code[None].astype(np.uint8), window=w)
                    img.write(to_uint16(vals), window=w)
        finally:
            bar.close()
            for rs in cache.values():
                for r in rs:
                    r.close()
        self.mark(
            rel if rel != "." else "image",
            names,
            items=[i["id"] for i in items],
            dates=list(dates),
        )

    # -- DEM -----------------------------------------------------------------------------
    def write_dem(self, product: Product, items: list[dict[str, Any]]) -> None:
        from tqdm import tqdm

        wins = list(windows(self.grid, self.opts.window))
        bar = tqdm(
            total=len(items) * len(wins), desc="DEM", unit="read",
            disable=not self.opts.progress, leave=False,
        )  # fmt: skip
        readers = []
        try:
            for it in sorted(items, key=lambda i: i["id"]):
                readers.append(
                    AssetReader(
                        it["assets"]["elevation"],
                        self.grid,
                        policy=self.opts.retry,
                        signing=self.signing,
                    )
                )
            with open_writer(
                self.out / "dem.tif",
                self.image_profile(1, "float32", DEM_NODATA),
                descriptions=["elevation"],
                units=["m"],
                tags={
                    VERTICAL_CRS_TAG: COPDEM_VERTICAL_CRS,
                    "source": f"{product.collection} via {self.req.stac_url}",
                    "created_by": f"demgen {__version__}",
                },
            ) as dst:
                for w in wins:
                    h = np.full((int(w.height), int(w.width)), np.nan, np.float32)
                    for r in readers:
                        data, ok = r.read(w)
                        fill = ok & np.isnan(h)
                        h[fill] = data[fill]
                        bar.update(1)
                    h[~np.isfinite(h)] = DEM_NODATA
                    dst.write(h[None], window=w)
        finally:
            bar.close()
            for r in readers:
                r.close()
        self.mark("dem", ["dem.tif"], items=[i["id"] for i in items])

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        image = [p for p in self.products if p.kind == "image"]
        dem = [p for p in self.products if p.kind == "dem"]
        pending = []
        if image and self.req.composite == "median" and not self.complete("image"):
            pending.append("image")
        if dem and not self.complete("dem"):
            pending.append("dem")
        per_date = image and self.req.composite == "none"
        if not pending and not per_date and self.prov.get("search"):
            self.log(f"{self.out}: every output is complete; nothing to do")
            return self.prov
        found = self.searched()
        self.prov["masks"] = {
            p.name: masks.masked_classes(p.mask_kind or "", self.req.mask_snow) for p in image
        }
        with gdal_env(self.opts.retry, self.opts.timeout):
            for p in image:
                items = found[p.name]["items"]
                groups = self.by_date(items)
                if self.req.composite == "median":
                    if "image" in pending:
                        self.write_image(p, items, ".", groups)
                    else:
                        self.log("image.tif, cloud_mask.tif: complete, skipped")
                    continue
                for date, group in groups.items():
                    if self.complete(date):
                        self.log(f"{date}: complete, skipped")
                        continue
                    self.write_image(p, group, date, {date: group})
            for p in dem:
                if "dem" in pending:
                    self.write_dem(p, found[p.name]["items"])
                else:
                    self.log("dem.tif: complete, skipped")
        self.save()
        return self.prov


def download(
    request: DownloadRequest, out: str | Path, options: DownloadOptions | None = None
) -> dict[str, Any]:
    """Run ``request`` into the folder ``out`` (module docstring); returns the provenance."""
    opts = options or DownloadOptions()
    return _Run(request.normalized(), Path(out), opts).run()
