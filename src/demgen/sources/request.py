"""What ``demgen download`` fetches and how: the request (a second run with an equal request
resumes the first), the run options, and the request's target grid.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from demgen.errors import InputError
from demgen.io.grid import Grid
from demgen.sources.grid import parse_bbox, parse_crs, target_grid
from demgen.sources.products import (
    PRODUCTS,
    parse_products,
)
from demgen.sources.signing import Signing
from demgen.sources.stac import EARTH_SEARCH, RetryPolicy, parse_dates

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
