"""Per-pixel cloud and shadow masks from the products' own quality layers.

Every mask is a uint8 code per pixel, the values demgen writes in ``cloud_mask.tif``:

====  ===========================================================
code  meaning
====  ===========================================================
0     clear: usable for the composite
1     cloud (incl. cirrus and dilated cloud)
2     cloud shadow
3     no data, saturated or defective
4     snow or ice (only when snow masking is asked for)
====  ===========================================================

Sentinel-2 L2A scene classification (SCL, 20 m; ESA, *Sentinel-2 Products Specification
Document* S2-PDGS-TAS-DI-PSD, and the Sen2Cor Software User Manual, "Scene
Classification"): 0 no data, 1 saturated or defective, 2 dark area pixels, 3 cloud
shadows, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified, 8 cloud medium
probability, 9 cloud high probability, 10 thin cirrus, 11 snow. Masked here: 0 and 1
(code 3), 3 (code 2), 8, 9 and 10 (code 1), and 11 with ``snow=True`` (code 4). Class 2
(dark areas, mostly topographic shadow) is kept: terrain shading is what a DEM model
learns from.

Landsat Collection 2 Level-2 QA_PIXEL (USGS, *Landsat 8-9 Collection 2 Level 2 Science
Product Guide* LSDS-1619, table "Pixel Quality Assessment (QA_PIXEL) Bit Index"): bit 0
fill, 1 dilated cloud, 2 cirrus (OLI only), 3 cloud, 4 cloud shadow, 5 snow, 6 clear,
7 water. Masked: bit 0 (code 3), bits 1, 2, 3 (code 1), bit 4 (code 2), bit 5 with
``snow=True`` (code 4).
"""

from __future__ import annotations

import numpy as np

CLEAR, CLOUD, SHADOW, NODATA, SNOW = 0, 1, 2, 3, 4
CODES = {CLEAR: "clear", CLOUD: "cloud", SHADOW: "cloud shadow", NODATA: "no data", SNOW: "snow"}

SCL_NODATA = (0, 1)
SCL_SHADOW = (3,)
SCL_CLOUD = (8, 9, 10)
SCL_SNOW = (11,)

QA_FILL, QA_DILATED, QA_CIRRUS, QA_CLOUD, QA_SHADOW, QA_SNOW = 0, 1, 2, 3, 4, 5


def scl_mask(scl: np.ndarray, *, snow: bool = False) -> np.ndarray:
    """Mask codes (module table) from Sentinel-2 SCL classes."""
    scl = np.asarray(scl)
    out = np.zeros(scl.shape, np.uint8)
    if snow:
        out[np.isin(scl, SCL_SNOW)] = SNOW
    out[np.isin(scl, SCL_SHADOW)] = SHADOW
    out[np.isin(scl, SCL_CLOUD)] = CLOUD
    out[np.isin(scl, SCL_NODATA)] = NODATA
    return out


def qa_pixel_mask(qa: np.ndarray, *, snow: bool = False) -> np.ndarray:
    """Mask codes (module table) from Landsat C2 L2 QA_PIXEL bits."""
    qa = np.asarray(qa).astype(np.uint16, copy=False)

    def bit(b: int) -> np.ndarray:
        return (qa >> np.uint16(b)) & np.uint16(1) == 1

    out = np.zeros(qa.shape, np.uint8)
    if snow:
        out[bit(QA_SNOW)] = SNOW
    out[bit(QA_SHADOW)] = SHADOW
    out[bit(QA_DILATED) | bit(QA_CIRRUS) | bit(QA_CLOUD)] = CLOUD
    out[bit(QA_FILL)] = NODATA
    return out


def masked_classes(kind: str, snow: bool = False) -> dict[str, list[int] | str]:
    """What a mask removes, for provenance.json."""
    if kind == "scl":
        return {
            "layer": "SCL",
            "cloud": list(SCL_CLOUD),
            "cloud_shadow": list(SCL_SHADOW),
            "no_data": list(SCL_NODATA),
            "snow": list(SCL_SNOW) if snow else [],
        }
    return {
        "layer": "QA_PIXEL bits",
        "cloud": [QA_DILATED, QA_CIRRUS, QA_CLOUD],
        "cloud_shadow": [QA_SHADOW],
        "no_data": [QA_FILL],
        "snow": [QA_SNOW] if snow else [],
    }
