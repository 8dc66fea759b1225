"""The ``provenance.json`` of a download: the request, the grid, the recorded search (reused on
a second run, so no STAC request repeats) and each output's completion record (reused so no
complete output is read again); another request into the same folder is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from demgen import __version__
from demgen.errors import InputError
from demgen.io.jsonio import write_json
from demgen.sources.products import (
    PRODUCTS,
    Product,
    reflectance_coefficients,
)
from demgen.sources.request import DownloadOptions, DownloadRequest, grid_for
from demgen.sources.stac import open_client, search

FORMAT = "demgen-download/1"


def slim_item(product: Product, item: dict[str, Any]) -> dict[str, Any]:
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


class Provenance:
    """The provenance bookkeeping of one download into ``out`` (load, search, completion)."""

    def __init__(self, req: DownloadRequest, out: Path, opts: DownloadOptions) -> None:
        self.req, self.out, self.opts = req, out, opts
        self.grid = grid_for(req)
        self.products = [PRODUCTS[n] for n in req.collections]
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
                "items": [slim_item(p, i) for i in res.items],
                "rejected": res.rejected,
            }
        self.prov["search"] = result
        self.save()
        return result

    def by_date(self, items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for it in items:
            groups.setdefault(it["date"], []).append(it)
        for g in groups.values():
            g.sort(key=lambda i: (i["cloud_cover"] is None, i["cloud_cover"] or 0.0, i["id"]))
        return dict(sorted(groups.items()))
