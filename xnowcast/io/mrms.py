"""NOAA MRMS (Multi-Radar/Multi-Sensor) GRIB2 products, e.g. ``PrecipRate``, through ecCodes.

Decoded with ecCodes (the ``eccodes`` package from PyPI, whose wheel carries
the library); the GRIB2 message gives:

* the field: MRMS's local table (``discipline`` 209), ``parameterCategory`` 6,
  ``parameterNumber`` 1 = ``PrecipRate`` in mm h-1 (other MRMS fields are
  refused); **negative values are codes** (-3 "no coverage", -1 "missing"),
  returned as NaN;
* the grid: a regular latitude/longitude grid (``gridType = regular_ll``,
  0.01 degree, first point the north-west cell centre, rows north to south),
  on the earth model of ``shapeOfTheEarth`` (code table 3.2; MRMS uses 2, the
  IAU 1965 ellipsoid, a = 6378160 m, 1/f = 297);
* the time: ``validityDate``/``validityTime`` (UTC).

The coordinates are ``x`` = longitude (degrees_east, -180..180) and ``y`` =
latitude (degrees_north), and ``crs`` is the ``latitude_longitude`` grid
mapping of that ellipsoid.  A GRIB2 message is decoded whole (PNG packing),
so each file is one chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid
from xnowcast.io._crs import cf_attributes, to_crs

__all__ = ["read_data", "read_header", "sniff"]

FORMAT = "mrms_grib2"

#: (discipline, parameterCategory, parameterNumber) -> (MRMS name, variable).
PARAMETERS = {(209, 6, 1): ("PrecipRate", "precipitation")}

#: GRIB2 code table 3.2 (shape of the earth) -> PROJ ellipsoid parameters.
EARTH_SHAPES: dict[int, str] = {
    0: "+R=6367470",
    2: "+a=6378160 +rf=297",
    4: "+ellps=GRS80",
    5: "+ellps=WGS84",
    6: "+R=6371229",
}


def sniff(path: Path, head: bytes) -> bool:
    """True for a GRIB edition-2 file (``GRIB`` magic, edition byte 2)."""
    return head[:4] == b"GRIB" and len(head) > 7 and head[7] == 2


def _eccodes() -> Any:
    try:
        import eccodes
    except ImportError as err:  # pragma: no cover - eccodes is a dependency
        raise ImportError("reading GRIB2 needs ecCodes: pip install eccodes") from err
    return eccodes


def _message(path: Path) -> Any:
    eccodes = _eccodes()
    with open(path, "rb") as f:
        handle = eccodes.codes_grib_new_from_file(f)
    if handle is None:
        raise RadarFormatError(f"{path}: no GRIB message in the file")
    return handle


def read_header(path: Path) -> FrameInfo:
    """Time, grid and parameter of an MRMS GRIB2 file."""
    eccodes = _eccodes()
    handle = _message(path)
    try:

        def get(key: str) -> Any:
            return eccodes.codes_get(handle, key)

        key = (get("discipline"), get("parameterCategory"), get("parameterNumber"))
        if key not in PARAMETERS:
            raise RadarFormatError(
                f"{path}: GRIB2 parameter (discipline, category, number) = {key} is not one "
                f"this reader decodes ({', '.join(n for n, _ in PARAMETERS.values())})"
            )
        name, variable = PARAMETERS[key]
        if get("gridType") != "regular_ll" or get("iScansNegatively") or get("jScansPositively"):
            raise RadarFormatError(
                f"{path}: grid {get('gridType')} (scanning i-, j+ = "
                f"{get('iScansNegatively')}, {get('jScansPositively')}) is not a north-to-south "
                "regular_ll grid"
            )
        shape = get("shapeOfTheEarth")
        if shape not in EARTH_SHAPES:
            raise RadarFormatError(f"{path}: shapeOfTheEarth {shape} is not supported")
        nx, ny = get("Ni"), get("Nj")
        lon0 = float(get("longitudeOfFirstGridPointInDegrees"))
        lat0 = float(get("latitudeOfFirstGridPointInDegrees"))
        dlon = float(get("iDirectionIncrementInDegrees"))
        dlat = float(get("jDirectionIncrementInDegrees"))
        date, hhmm = int(get("validityDate")), int(get("validityTime"))
        centre = get("centre")
    finally:
        eccodes.codes_release(handle)
    stamp = f"{date:08d}{hhmm:04d}"
    time = np.datetime64(
        f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}", "ns"
    )
    proj4 = f"+proj=longlat {EARTH_SHAPES[shape]} +no_defs"
    crs = cf_attributes(to_crs(proj4), proj4)
    lon0 = (lon0 + 180.0) % 360.0 - 180.0
    grid = Grid(nx=nx, ny=ny, x0=lon0, y0=lat0, dx=dlon, dy=-dlat, crs=crs, geographic=True)
    return FrameInfo(
        path=str(path),
        format=FORMAT,
        time=time,
        grid=grid,
        variable=variable,
        var_attrs={
            "mrms_parameter": name,
            "comment": "negative MRMS codes (-3 no coverage, -1 missing) -> NaN",
        },
        global_attrs={
            "institution": "NOAA National Severe Storms Laboratory (MRMS)",
            "source": f"MRMS {name} GRIB2 (originating centre {centre})",
            "title": f"MRMS {name} mosaic",
        },
        decode={"shape": (ny, nx)},
    )


def read_data(info: FrameInfo) -> np.ndarray:
    """Rain rate in mm h-1 (float32; negative codes and GRIB missing values -> NaN)."""
    eccodes = _eccodes()
    handle = _message(Path(info.path))
    try:
        values = eccodes.codes_get_values(handle)
        missing = eccodes.codes_get(handle, "missingValue")
        bitmap = eccodes.codes_get(handle, "bitmapPresent")
    finally:
        eccodes.codes_release(handle)
    values = np.asarray(values, dtype=np.float64).reshape(info.decode["shape"])
    if bitmap:
        values[values == missing] = np.nan
    values[values < 0] = np.nan
    return values.astype(np.float32)
