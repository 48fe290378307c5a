"""FMI radar composites as GeoTIFF (8-bit, tiled, deflate), read with tifffile.

What the file says, and how it is used:

* GeoTIFF keys: ``ProjectedCSTypeGeoKey`` (an EPSG code, 3067 = ETRS89 /
  TM35FIN for FMI), ``ModelPixelScale`` (cell size, m) and ``ModelTiepoint``
  (the projected position of pixel (0, 0): its outer upper-left corner when
  ``GTRasterTypeGeoKey`` is *PixelIsArea*, its centre when *PixelIsPoint*);
  rows run from north to south;
* the value coding in the ``GDAL_METADATA`` tag (FMI nests its own
  ``GDALMetadata`` document, XML-escaped, inside GDAL's): ``Quantity`` (its
  ``unit`` must be dBZ), ``Gain``, ``Offset``, ``Nodata``, ``Undetect`` and
  ``Observation time`` (``YYYYMMDDhhmm``, UTC).  Then
  ``dBZ = Gain * DN + Offset`` (FMI: 0.5 DN - 32, the same coding as its PGM
  files), ``DN == Nodata`` (255) -> NaN, and ``DN == Undetect`` (0) keeps its
  coded value, -32 dBZ, the floor of the scale (observed, no echo).

Windows read only the TIFF tiles they overlap.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid
from xnowcast.io._crs import cf_attributes, to_crs

__all__ = ["parse_gdal_metadata", "read_data", "read_header", "read_window", "sniff"]

FORMAT = "fmi_geotiff"

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_ITEM = re.compile(r'<Item name="([^"]+)"([^>]*)>([^<]*)</Item>')
#: Spatial chunk (rows, cols) proposed for ``chunks="auto"``, in tiles.
AUTO_TILES = 4


def sniff(path: Path, head: bytes) -> bool:
    """True for a TIFF whose GeoTIFF keys and GDAL metadata describe a dBZ field."""
    if head[:4] not in _TIFF_MAGIC:
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if 34735 not in page.tags or 42112 not in page.tags:
                return False
            return "Quantity" in parse_gdal_metadata(page.tags[42112].value)
    except (tifffile.TiffFileError, OSError, ValueError):
        return False


def parse_gdal_metadata(text: str) -> dict[str, tuple[str, str]]:
    """``{name: (value, attributes)}`` of the items of a (possibly nested) GDAL_METADATA tag."""
    items: dict[str, tuple[str, str]] = {}
    for _ in range(4):  # FMI escapes its own document inside GDAL's, once or twice
        for name, attrs, value in _ITEM.findall(text):
            items.setdefault(name, (value.strip(), attrs))
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return items


def _number(items: dict[str, tuple[str, str]], name: str, path: Path) -> float:
    try:
        return float(items[name][0])
    except (KeyError, ValueError) as err:
        raise RadarFormatError(f"{path}: GDAL metadata lacks a numeric {name!r} item") from err


def read_header(path: Path) -> FrameInfo:
    """Time, grid and coding of an FMI GeoTIFF composite."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        geo = tif.geotiff_metadata or {}
        items = parse_gdal_metadata(page.tags[42112].value)
        ny, nx = page.shape[:2]
        tiles = (page.tilelength, page.tilewidth) if page.is_tiled else None
        if page.dtype != np.uint8 or len(page.shape) != 2:
            raise RadarFormatError(
                f"{path}: a {page.dtype} image of shape {page.shape}; FMI GeoTIFFs are 8-bit, one band"
            )
    epsg = geo.get("ProjectedCSTypeGeoKey")
    try:
        scale = geo["ModelPixelScale"]
        tie = geo["ModelTiepoint"]
    except KeyError as err:
        raise RadarFormatError(f"{path}: GeoTIFF without {err.args[0]}") from err
    if not isinstance(epsg, int) or epsg == 32767:
        raise RadarFormatError(f"{path}: the GeoTIFF CRS is not an EPSG code ({epsg!r})")
    if tie[0] != 0 or tie[1] != 0:
        raise RadarFormatError(f"{path}: tie point at pixel ({tie[0]}, {tie[1]}), not (0, 0)")
    dx, dy = float(scale[0]), float(scale[1])
    point = int(geo.get("GTRasterTypeGeoKey", 1)) == 2  # PixelIsPoint: the tie is a centre
    left = float(tie[3]) - (dx / 2 if point else 0.0)
    top = float(tie[4]) + (dy / 2 if point else 0.0)
    value, attrs = items.get("Quantity", ("", ""))
    if 'unit="dBZ"' not in attrs:
        raise RadarFormatError(f"{path}: quantity {value!r} ({attrs.strip()}) is not in dBZ")
    coding = {
        key: _number(items, name, path)
        for key, name in (("gain", "Gain"), ("offset", "Offset"), ("nodata", "Nodata"))
    }
    stamp = items.get("Observation time", ("", ""))[0]
    if not re.fullmatch(r"\d{12}", stamp):
        raise RadarFormatError(f"{path}: no 'Observation time' (YYYYMMDDhhmm) in the metadata")
    time = np.datetime64(
        f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}", "ns"
    )
    crs = to_crs(f"EPSG:{epsg}")
    grid = Grid.from_upper_left_corner(
        nx=nx, ny=ny, left=left, top=top, dx=dx, dy=dy, crs=cf_attributes(crs)
    )
    return FrameInfo(
        path=str(path),
        format=FORMAT,
        time=time,
        grid=grid,
        variable="reflectivity",
        var_attrs={
            "comment": (
                f"{value}: dBZ = {coding['gain']:g} * DN + {coding['offset']:g} (GDAL metadata "
                f"Gain/Offset); DN {coding['nodata']:g} (Nodata) -> NaN; DN 0 (Undetect) is the "
                "scale floor (no echo)"
            )
        },
        global_attrs={
            "institution": "Finnish Meteorological Institute (FMI)",
            "source": f"FMI radar composite GeoTIFF ({crs.name})",
            "title": f"FMI radar composite, {value}",
        },
        decode=coding,
        storage_chunks=(tiles[0] * AUTO_TILES, tiles[1] * AUTO_TILES) if tiles else None,
    )


def _raw_window(path: str, rows: slice, cols: slice) -> np.ndarray:
    """The 8-bit values of a window, decoding only the tiles it overlaps."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        ny, nx = page.shape[:2]
        r0, r1, _ = rows.indices(ny)
        c0, c1, _ = cols.indices(nx)
        if not page.is_tiled or (r1 - r0) * (c1 - c0) > ny * nx // 4:
            return page.asarray()[r0:r1, c0:c1]  # large windows: tifffile's own fast path
        th, tw = page.tilelength, page.tilewidth
        out = np.empty((r1 - r0, c1 - c0), np.uint8)
        tiles_across = -(-nx // tw)
        fh = tif.filehandle
        for tr in range(r0 // th, -(-r1 // th)):
            for tc in range(c0 // tw, -(-c1 // tw)):
                index = tr * tiles_across + tc
                fh.seek(page.dataoffsets[index])
                data = fh.read(page.databytecounts[index])
                tile = np.asarray(page.decode(data, index)[0]).reshape(th, tw)
                ys = slice(max(r0, tr * th), min(r1, (tr + 1) * th))
                xs = slice(max(c0, tc * tw), min(c1, (tc + 1) * tw))
                out[ys.start - r0 : ys.stop - r0, xs.start - c0 : xs.stop - c0] = tile[
                    ys.start - tr * th : ys.stop - tr * th, xs.start - tc * tw : xs.stop - tc * tw
                ]
    return out


def read_window(info: FrameInfo, rows: slice, cols: slice) -> np.ndarray:
    """Reflectivity (dBZ, float32, NaN where no data) in a window."""
    raw = _raw_window(info.path, rows, cols)
    coding: dict[str, Any] = info.decode
    values = raw.astype(np.float32) * np.float32(coding["gain"]) + np.float32(coding["offset"])
    values[raw == coding["nodata"]] = np.nan
    return values


def read_data(info: FrameInfo) -> np.ndarray:
    """Reflectivity of the whole file (dBZ, float32, NaN where no data)."""
    return read_window(info, slice(None), slice(None))
