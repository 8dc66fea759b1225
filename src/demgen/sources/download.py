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

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from demgen import __version__
from demgen.data.align import Grid
from demgen.errors import InputError
from demgen.io.geodesy import VERTICAL_CRS_TAG
from demgen.io.jsonio import write_json
from demgen.io.raster import geotiff_profile, open_writer
from demgen.sources import masks
from demgen.sources.composite import median_composite, mosaic_date, to_uint16
from demgen.sources.grid import parse_bbox, parse_crs, target_grid, windows
from demgen.sources.products import (
    COPDEM_VERTICAL_CRS,
    PRODUCTS,
    Product,
    parse_products,
    reflectance_coefficients,
)
from demgen.sources.read import AssetReader, gdal_env
from demgen.sources.signing import Signing, make_signing
from demgen.sources.stac import EARTH_SEARCH, RetryPolicy, open_client, parse_dates, search

FORMAT = "demgen-download/1"
DEM_NODATA = -9999.0
COMPOSITES = ("median", "none")


@dataclass
class DownloadRequest:
    """What to download; a second run with an equal request resumes the first."""

    bbox: tuple[float, float, float, float]
    dates: tuple[str, str]
    collections: list[str] = field(default_factory=lambda: ["s2", "copdem"])
    crs: str | None = None
    resolution: float | None = None
    stac_url: str = EARTH_SEARCH
    max_cloud: float | None = 20.0
    composite: str = "median"
    mask_snow: bool = False
    max_items: int | None = 100
    sign: str = "none"

    def normalized(self) -> DownloadRequest:
        """Checked, with canonical values (parsed bbox, dates, CRS string)."""
        if self.composite not in COMPOSITES:
            raise InputError(f"--composite {self.composite!r}: choose {' or '.join(COMPOSITES)}")
        if self.max_cloud is not None and not 0 <= self.max_cloud <= 100:
            raise InputError(f"--max-cloud {self.max_cloud}: must be within 0..100 (percent)")
        crs = parse_crs(self.crs)
        return DownloadRequest(
            bbox=parse_bbox(self.bbox),
            dates=parse_dates("/".join(self.dates)),
            collections=[p.name for p in parse_products(",".join(self.collections))],
            crs=crs.to_string() if crs else None,
            resolution=float(self.resolution) if self.resolution else None,
            stac_url=self.stac_url.rstrip("/"),
            max_cloud=self.max_cloud,
            composite=self.composite,
            mask_snow=self.mask_snow,
            max_items=self.max_items,
            sign=self.sign,
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists, as read back


@dataclass
class DownloadOptions:
    """How to run (not part of the request): retries, timeouts, progress, overwrite."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 30.0
    progress: bool = True
    overwrite: bool = False
    window: int = 512
    token_url: str | None = None
    signing: Signing | None = None  # overrides ``request.sign``
    log: Callable[[str], None] | None = None


def grid_for(req: DownloadRequest) -> Grid:
    """The target grid of a (normalized) request."""
    products = [PRODUCTS[n] for n in req.collections]
    image = [p for p in products if p.kind == "image"]
    res = req.resolution or (image[0].resolution_m if image else 30.0)
    return target_grid(req.bbox, parse_crs(req.crs), res)


def _slim(product: Product, item: dict[str, Any]) -> dict[str, Any]:
    """What provenance.json keeps of an item: ids, date, cloud cover, the hrefs read."""
    props = item.get("properties", {})
    wanted = [*product.bands, *([product.mask] if product.mask else [])]
    assets = {b.name: item["assets"][product.asset_key(item, b)]["href"] for b in wanted}
    out: dict[str, Any] = {
        "id": str(item.get("id")),
        "collection": item.get("collection") or product.collection,
        "product": product.name,
        "datetime": props.get("datetime"),
        "date": str(props.get("datetime") or props.get("start_datetime") or "")[:10],
        "cloud_cover": props.get("eo:cloud_cover"),
        "platform": props.get("platform"),
        "assets": assets,
    }
    if product.kind == "image":
        scale, offset = reflectance_coefficients(product, item)
        out["reflectance"] = {"scale": scale, "offset": offset}
        for k in ("s2:processing_baseline", "earthsearch:boa_offset_applied"):
            if k in props:
                out[k] = props[k]
    return out


class _Run:
    """One download into ``out``: provenance bookkeeping and the output writers."""

    def __init__(self, req: DownloadRequest, out: Path, opts: DownloadOptions) -> None:
        self.req, self.out, self.opts = req, out, opts
        self.grid = grid_for(req)
        self.products = [PRODUCTS[n] for n in req.collections]
        self.signing = opts.signing or make_signing(req.sign, opts.retry, opts.token_url)
        self.prov_path = out / "provenance.json"
        self.prov = self._load()

    def log(self, msg: str) -> None:
        if self.opts.log:
            self.opts.log(msg)

    def _load(self) -> dict[str, Any]:
        fresh = {
            "format": FORMAT,
            "created_by": f"demgen {__version__}",
            "request": self.req.to_dict(),
            "grid": self.grid.to_dict(),
            "search": None,
            "outputs": {},
        }
        if self.prov_path.is_file():
            try:
                old = json.loads(self.prov_path.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(f"{self.prov_path}: unreadable ({exc})") from exc
            if old.get("request") == fresh["request"] and old.get("format") == FORMAT:
                return old
            if not self.opts.overwrite:
                raise InputError(
                    f"{self.out} holds a download of another request (see its "
                    "provenance.json); pass --overwrite or choose another folder"
                )
        elif self.out.is_dir() and any(self.out.iterdir()) and not self.opts.overwrite:
            raise InputError(f"{self.out}: not empty and no provenance.json (pass --overwrite)")
        return fresh

    def save(self) -> None:
        write_json(self.prov_path, self.prov)

    def complete(self, key: str) -> bool:
        rec = self.prov["outputs"].get(key)
        if not rec or not rec.get("complete"):
            return False
        for name, size in rec["files"].items():
            p = self.out / name
            if not p.is_file() or p.stat().st_size != size:
                return False
        return True

    def mark(self, key: str, names: list[str], **extra: Any) -> None:
        files = {n: (self.out / n).stat().st_size for n in names}
        self.prov["outputs"][key] = {"complete": True, "files": files, **extra}
        self.save()

    # -- search --------------------------------------------------------------------------
    def searched(self) -> dict[str, Any]:
        if self.prov.get("search"):
            self.log("search: reusing the items recorded in provenance.json")
            return self.prov["search"]
        client = open_client(self.req.stac_url, self.opts.retry, self.opts.timeout)
        result: dict[str, Any] = {}
        for p in self.products:
            res = search(
                client,
                p.collection,
                self.req.bbox,
                self.req.dates if p.dated else None,
                max_cloud=self.req.max_cloud if p.cloud_property else None,
                cloud_property=p.cloud_property,
                platforms=p.platforms,
                max_items=self.req.max_items,
                url=self.req.stac_url,
            )
            if not res.items:
                why = (
                    f"; {len(res.rejected)} rejected, e.g. {res.rejected[0]['reason']}"
                    if res.rejected
                    else ""
                )
                when = f" in {self.req.dates[0]}/{self.req.dates[1]}" if p.dated else ""
                raise InputError(
                    f"no {p.collection} items at {self.req.stac_url} over bbox "
                    f"{','.join(f'{v:g}' for v in self.req.bbox)}{when}{why}"
                )
            self.log(f"{p.collection}: {len(res.items)} item(s), {len(res.rejected)} rejected")
            result[p.name] = {
                "collection": p.collection,
                "server_query": res.server_query,
                "items": [_slim(p, i) for i in res.items],
                "rejected": res.rejected,
            }
        self.prov["search"] = result
        self.save()
        return result

    # -- imagery -------------------------------------------------------------------------
    def by_date(self, items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for it in items:
            groups.setdefault(it["date"], []).append(it)
        for g in groups.values():
            g.sort(key=lambda i: (i["cloud_cover"] is None, i["cloud_cover"] or 0.0, i["id"]))
        return dict(sorted(groups.items()))

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
