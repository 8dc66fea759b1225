"""LAS/LAZ/COPC reading and writing with laspy, CRS included, without pyproj.

laspy reads LAS and, through the ``lazrs`` backend (a PyPI wheel), LAZ. A COPC file is a
LAZ 1.4 file whose chunks are ordered as an octree; read sequentially it is plain LAZ, so
it needs nothing more here.

**CRS.** laspy's ``header.parse_crs()`` and ``add_crs()`` need pyproj; demgen parses the
two LAS CRS records itself and builds a rasterio CRS (rasterio bundles PROJ):

- the OGC WKT VLR (user id ``LASF_Projection``, record 2112; LAS 1.4, required for point
  formats 6-10): ``CRS.from_wkt``;
- the GeoTIFF GeoKeyDirectory VLR (record 34735; LAS <= 1.3): ``ProjectedCSTypeGeoKey``
  (3072) or else ``GeographicTypeGeoKey`` (2048) as an EPSG code, as laspy does, and
  ``VerticalCSTypeGeoKey`` (4096) for the vertical datum.

The WKT record is preferred when both exist (the LAS 1.4 rule). The vertical datum is the
vertical part of a compound WKT, else the vertical GeoKey, else ``"unknown"``.

**Writing.** LAS 1.4, point format 6 (7 with RGB), WKT VLR with the global-encoding WKT
bit set, coordinates scaled by 0.001 (millimetres) from an offset at the data's minimum.
demgen's own VLR (user id ``demgen``, record 1, description ``heights=relative`` or
``heights=absolute``, a JSON payload with ``heights`` and ``vertical_crs``) flags relative
heights and carries a vertical datum that the CRS alone does not; relative heights are
also named in the system identifier, which every LAS tool shows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import laspy
import numpy as np
from rasterio.crs import CRS

from demgen import __version__
from demgen.errors import InputError, first_line
from demgen.io.geodesy import UNKNOWN_DATUM
from demgen.io.raster import atomic_path

SCALE = 0.001  # metres per LAS integer step when writing: millimetres
DEMGEN_USER_ID = "demgen"
DEMGEN_RECORD_ID = 1
RELATIVE_DESCRIPTION = "heights=relative"
WKT_RECORD_ID = 2112
GEOKEY_PROJECTED = 3072
GEOKEY_GEOGRAPHIC = 2048
GEOKEY_VERTICAL = 4096
LAS_SUFFIXES = (".las", ".laz")


@dataclass(frozen=True)
class LasInfo:
    """What a LAS/LAZ header says: point count, bounds, CRS, vertical datum, flags."""

    path: Path
    count: int
    bounds: tuple[float, float, float, float]  # minx, miny, maxx, maxy
    crs: CRS | None
    vertical: str
    relative: bool
    point_format: int


@dataclass
class PointChunk:
    """The fields gridding needs, for one chunk of points (coordinates already scaled)."""

    x: np.ndarray  # float64
    y: np.ndarray
    z: np.ndarray
    classification: np.ndarray  # uint8
    return_number: np.ndarray  # uint8
    withheld: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.x)


def _epsg_crs(code: int) -> CRS | None:
    try:
        return CRS.from_epsg(int(code))
    except Exception:
        return None


def _vertical_of_wkt(wkt: str) -> str | None:
    if wkt.startswith(("COMPD_CS", "COMPOUNDCRS")):
        m = re.search(r'(?:VERT_CS|VERTCRS)\["([^"]+)"', wkt)
        if m:
            return m.group(1)
    return None


def crs_from_vlrs(vlrs: Iterable[object]) -> tuple[CRS | None, str]:
    """(horizontal or compound CRS, vertical datum name) from a header's (E)VLRs."""
    wkt_crs: CRS | None = None
    key_crs: CRS | None = None
    vertical: str | None = None
    key_vertical: str | None = None
    for vlr in vlrs:
        if isinstance(vlr, laspy.vlrs.known.WktCoordinateSystemVlr):
            text = (vlr.string or "").strip().rstrip("\0")
            if text:
                try:
                    wkt_crs = CRS.from_wkt(text)
                except Exception:
                    wkt_crs = None
                if wkt_crs is not None:
                    vertical = _vertical_of_wkt(wkt_crs.to_wkt())
        elif isinstance(vlr, laspy.vlrs.known.GeoKeyDirectoryVlr):
            keys = {k.id: k for k in vlr.geo_keys}
            for key_id in (GEOKEY_PROJECTED, GEOKEY_GEOGRAPHIC):
                k = keys.get(key_id)
                if k is not None and k.tiff_tag_location == 0 and 1024 <= k.value_offset <= 32766:
                    key_crs = _epsg_crs(k.value_offset)
                    if key_crs is not None:
                        break
            k = keys.get(GEOKEY_VERTICAL)
            if k is not None and k.tiff_tag_location == 0 and 1024 <= k.value_offset <= 32766:
                vcrs = _epsg_crs(k.value_offset)
                m = re.search(r'(?:VERT_CS|VERTCRS)\["([^"]+)"', vcrs.to_wkt()) if vcrs else None
                key_vertical = m.group(1) if m else f"EPSG:{k.value_offset}"
    crs = wkt_crs if wkt_crs is not None else key_crs
    return crs, vertical or key_vertical or UNKNOWN_DATUM


def _all_vlrs(header: laspy.LasHeader) -> list[object]:
    out = list(header.vlrs)
    if getattr(header, "evlrs", None):
        out += list(header.evlrs)
    return out


def demgen_metadata(header: laspy.LasHeader) -> dict[str, str]:
    """The JSON payload of demgen's VLR (``heights``, ``vertical_crs``), or {} without one."""
    for v in _all_vlrs(header):
        if getattr(v, "user_id", "") == DEMGEN_USER_ID and v.record_id == DEMGEN_RECORD_ID:
            try:
                meta = json.loads(bytes(v.record_data).decode())
            except Exception:
                meta = {}
            meta = {str(k): str(x) for k, x in meta.items()} if isinstance(meta, dict) else {}
            if v.description == RELATIVE_DESCRIPTION:
                meta["heights"] = "relative"
            return meta
    return {}


def _open(path: Path) -> laspy.LasReader:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        return laspy.open(path)
    except Exception as exc:  # laspy raises LaspyException and OSError subclasses
        raise InputError(f"{path}: not a readable LAS/LAZ file ({first_line(exc)})") from exc


def read_info(path: str | Path) -> LasInfo:
    """Read a LAS/LAZ/COPC header (no points): count, bounds, CRS, vertical datum."""
    path = Path(path)
    with _open(path) as reader:
        h = reader.header
        crs, vertical = crs_from_vlrs(_all_vlrs(h))
        meta = demgen_metadata(h)
        if vertical == UNKNOWN_DATUM and meta.get("vertical_crs"):
            vertical = meta["vertical_crs"]
        return LasInfo(
            path=path,
            count=int(h.point_count),
            bounds=(float(h.mins[0]), float(h.mins[1]), float(h.maxs[0]), float(h.maxs[1])),
            crs=crs,
            vertical=vertical,
            relative=meta.get("heights") == "relative",
            point_format=int(h.point_format.id),
        )


def iter_chunks(path: str | Path, chunk_size: int = 1_000_000) -> Iterator[PointChunk]:
    """Yield the points of one file in chunks of at most ``chunk_size`` (bounded memory)."""
    path = Path(path)
    with _open(path) as reader:
        try:
            for pts in reader.chunk_iterator(chunk_size):
                yield PointChunk(
                    x=np.asarray(pts.x, dtype=np.float64),
                    y=np.asarray(pts.y, dtype=np.float64),
                    z=np.asarray(pts.z, dtype=np.float64),
                    classification=np.asarray(pts.classification, dtype=np.uint8),
                    return_number=np.asarray(pts.return_number, dtype=np.uint8),
                    withheld=np.asarray(pts.withheld, dtype=bool),
                )
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path}: reading points failed ({first_line(exc)})") from exc


def make_header(
    crs: CRS | None,
    offsets: tuple[float, float, float],
    *,
    rgb: bool = False,
    relative: bool = False,
    vertical: str = UNKNOWN_DATUM,
) -> laspy.LasHeader:
    """A LAS 1.4 header (point format 6, or 7 with RGB): the CRS as an OGC WKT VLR, and
    demgen's VLR saying whether heights are relative and their vertical datum."""
    header = laspy.LasHeader(point_format=7 if rgb else 6, version="1.4")
    header.scales = np.array([SCALE, SCALE, SCALE])
    header.offsets = np.array(offsets, dtype=np.float64)
    header.generating_software = f"demgen {__version__}"[:32]
    header.system_identifier = ("demgen relative heights" if relative else "demgen")[:32]
    if crs is not None:
        header.vlrs.append(laspy.vlrs.known.WktCoordinateSystemVlr(crs.to_wkt()))
        header.global_encoding.wkt = True
    heights = "relative" if relative else "absolute"
    payload = json.dumps({"heights": heights, "vertical_crs": vertical}).encode()
    header.vlrs.append(laspy.VLR(DEMGEN_USER_ID, DEMGEN_RECORD_ID, f"heights={heights}", payload))
    return header


def write_las(
    path: str | Path,
    chunks: Iterable[dict[str, np.ndarray]],
    *,
    crs: CRS | None,
    offsets: tuple[float, float, float],
    rgb: bool = False,
    relative: bool = False,
    vertical: str = UNKNOWN_DATUM,
) -> int:
    """Write chunks of points (dicts of x, y, z and optionally red, green, blue, uint16)
    to ``path`` atomically; LAZ when the name ends in ``.laz``. Returns the point count.

    Every point is a single return (return 1 of 1), class 1 (unclassified).
    """
    path = Path(path)
    if path.suffix.lower() not in LAS_SUFFIXES:
        raise InputError(f"{path}: the output must end in .las or .laz")
    header = make_header(crs, offsets, rgb=rgb, relative=relative, vertical=vertical)
    n = 0
    with (
        atomic_path(path) as tmp,
        laspy.open(tmp, mode="w", header=header, do_compress=path.suffix.lower() == ".laz") as w,
    ):
        for c in chunks:
            k = len(c["x"])
            if k == 0:
                continue
            pts = laspy.ScaleAwarePointRecord.zeros(k, header=header)
            pts.x, pts.y, pts.z = c["x"], c["y"], c["z"]
            pts.return_number = np.ones(k, np.uint8)
            pts.number_of_returns = np.ones(k, np.uint8)
            pts.classification = np.ones(k, np.uint8)
            if rgb:
                pts.red, pts.green, pts.blue = c["red"], c["green"], c["blue"]
            w.write_points(pts)
            n += k
    return n
