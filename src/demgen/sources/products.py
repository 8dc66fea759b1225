"""What demgen knows about each product: STAC collection, asset keys, scaling, masks.

Short names on the command line (``--collections s2,copdem``):

- ``s2``: Sentinel-2 L2A, collection ``sentinel-2-l2a``. Bands B2 B3 B4 B8 (blue, green,
  red, NIR, 10 m) and the SCL layer (20 m). Asset keys differ by catalogue: Earth Search
  v1 names them ``blue green red nir scl``, the Planetary Computer ``B02 B03 B04 B08 SCL``;
  both are tried. Reflectance = DN x 1e-4 + offset (ESA: ``L2A_BOA = (DN +
  BOA_ADD_OFFSET) / QUANTIFICATION_VALUE`` with QUANTIFICATION_VALUE 10000 and, from
  processing baseline 04.00, i.e. products since 2022-01-25, BOA_ADD_OFFSET -1000: offset
  -0.1). Earth Search v1 re-applies the offset to its COGs for many of those items and
  says so with ``earthsearch:boa_offset_applied: true`` (older items:
  ``sentinel:boa_offset_applied``); then the offset is 0. Its ``raster:bands`` offset is
  known to be wrong for such items (Element84/earth-search#9, #66, #71), so it is not
  used. Baseline from ``s2:processing_baseline`` (or ``sentinel:processing_baseline``);
  when absent, the sensing date decides (>= 2022-01-25: 04.00).
- ``landsat``: Landsat Collection 2 Level-2 surface reflectance, collection
  ``landsat-c2-l2``, Landsat 8 and 9 only (OLI: their band numbers B2 B3 B4 B5 are blue,
  green, red, NIR). Assets ``blue green red nir08 qa_pixel`` (both catalogues).
  Reflectance = DN x 2.75e-5 - 0.2 (USGS, *Landsat 8-9 C2 L2 Science Product Guide*
  LSDS-1619, "Surface Reflectance" scale factors). DN 0 is fill.
- ``copdem``: Copernicus DEM GLO-30, collection ``cop-dem-glo-30``, asset ``data``:
  float32 heights in metres above the EGM2008 geoid, 1 arc-second tiles in EPSG:4326.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from demgen.errors import InputError

S2_BASELINE_04_SINCE = "2022-01-25"


@dataclass(frozen=True)
class Band:
    """One output band: its name (band description) and the asset keys it may have."""

    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Product:
    """A product demgen can download (see the module docstring)."""

    name: str
    collection: str
    kind: str  # "image" | "dem"
    bands: tuple[Band, ...]
    mask: Band | None = None
    mask_kind: str | None = None  # "scl" | "qa_pixel"
    resolution_m: float = 30.0
    cloud_property: str | None = "eo:cloud_cover"
    platforms: tuple[str, ...] = ()  # client-side filter on ``platform`` (lower case)
    source_nodata: float | None = 0.0
    dated: bool = True  # searched within --dates (a DEM is not: one epoch, any date)

    def asset_key(self, item: dict[str, Any], band: Band) -> str:
        """The first of ``band.keys`` the item has; InputError naming the item otherwise."""
        assets = item.get("assets", {})
        for k in band.keys:
            if k in assets:
                return k
        raise InputError(
            f"item {item.get('id')}: no asset for {band.name} (looked for "
            f"{', '.join(band.keys)}; it has {', '.join(sorted(assets)) or 'none'})"
        )


S2 = Product(
    name="s2",
    collection="sentinel-2-l2a",
    kind="image",
    bands=(
        Band("B2", ("blue", "B02")),
        Band("B3", ("green", "B03")),
        Band("B4", ("red", "B04")),
        Band("B8", ("nir", "B08")),
    ),
    mask=Band("SCL", ("scl", "SCL")),
    mask_kind="scl",
    resolution_m=10.0,
)
LANDSAT = Product(
    name="landsat",
    collection="landsat-c2-l2",
    kind="image",
    bands=(
        Band("B2", ("blue", "SR_B2")),
        Band("B3", ("green", "SR_B3")),
        Band("B4", ("red", "SR_B4")),
        Band("B5", ("nir08", "SR_B5")),
    ),
    mask=Band("QA_PIXEL", ("qa_pixel", "QA_PIXEL")),
    mask_kind="qa_pixel",
    resolution_m=30.0,
    platforms=("landsat-8", "landsat-9"),
)
COPDEM = Product(
    name="copdem",
    collection="cop-dem-glo-30",
    kind="dem",
    bands=(Band("elevation", ("data",)),),
    resolution_m=30.0,
    cloud_property=None,
    source_nodata=None,
    dated=False,
)
PRODUCTS = {p.name: p for p in (S2, LANDSAT, COPDEM)}
COPDEM_VERTICAL_CRS = "EGM2008 height"


def parse_products(text: str) -> list[Product]:
    """``--collections s2,copdem`` -> products; at most one image product."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in PRODUCTS]
    if unknown or not names:
        raise InputError(
            f"--collections {text!r}: unknown {', '.join(unknown) or 'empty list'} "
            f"(choose from {', '.join(PRODUCTS)})"
        )
    out = [PRODUCTS[n] for n in dict.fromkeys(names)]
    if sum(p.kind == "image" for p in out) > 1:
        raise InputError("--collections: choose one image product (s2 or landsat), not both")
    return out


def _version(text: Any) -> float | None:
    try:
        return float(str(text))
    except (TypeError, ValueError):
        return None


def reflectance_coefficients(product: Product, item: dict[str, Any]) -> tuple[float, float]:
    """(scale, offset) with reflectance = DN x scale + offset for ``item`` (module doc)."""
    props = item.get("properties", {})
    if product.name == "landsat":
        return 2.75e-5, -0.2
    applied = props.get("earthsearch:boa_offset_applied", props.get("sentinel:boa_offset_applied"))
    if applied is True:
        return 1e-4, 0.0
    baseline = _version(
        props.get("s2:processing_baseline", props.get("sentinel:processing_baseline"))
    )
    if baseline is None:
        date = str(props.get("datetime") or props.get("start_datetime") or "")[:10]
        return 1e-4, (-0.1 if date >= S2_BASELINE_04_SINCE else 0.0)
    return 1e-4, (-0.1 if baseline >= 4.0 else 0.0)
