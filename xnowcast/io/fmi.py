"""FMI radar composites: 8-bit binary PGM (``P5``), usually gzipped, metadata in header comments.

The header (Netpbm PGM: magic ``P5``, ``#`` comment lines, width, height,
maxval) carries FMI's metadata as ``# key value ...`` comments:

* ``obstime YYYYMMDDHHMM`` (UTC): the time stamp;
* ``param`` (``CorrectedReflectivity``): the quantity, coded as
  ``dBZ = gain * DN + offset``.  ``gain``/``offset``/``nodata`` comments are
  used when present; otherwise FMI's 8-bit reflectivity coding applies,
  ``gain = 0.5``, ``offset = -32`` (DN 0 = -32 dBZ, the floor of the scale:
  no echo) and DN 255 = no data (outside radar range, NaN);
* the projection block ``type stereographic``, ``centrallongitude``,
  ``centrallatitude``, ``truelatitude`` and the grid's outer corners
  ``bottomleft``/``topright`` as ``lon lat``, with ``metersperpixel_x``/``_y``.

The header does not give the earth model.  The projection is a spherical polar
stereographic one, and the corners and the pixel size together fix the
sphere's radius: the corners' projected extent on a unit sphere times the
radius must equal the grid size in metres, in both directions.  The reader
solves for it (6 371 288 m for the FMI composites), checks that x and y agree,
and records it as ``earth_radius`` of the ``crs`` variable.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, Any

import numpy as np

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid
from xnowcast.io._crs import cf_attributes, crs_from_proj4, project

__all__ = ["read_data", "read_header", "sniff"]

FORMAT = "fmi_pgm"

_GZIP_MAGIC = b"\x1f\x8b"
#: FMI's 8-bit reflectivity coding, used when the header gives no gain/offset/nodata.
DEFAULT_CODING = {"gain": 0.5, "offset": -32.0, "nodata": 255}


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def sniff(path: Path, head: bytes) -> bool:
    """True for a binary PGM, plain or gzipped."""
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(3)
        except OSError:
            return False
    return head[:2] == b"P5" and head[2:3].isspace()


def _parse_header(stream: IO[bytes], path: Path) -> tuple[dict[str, list[str]], int, int, int]:
    """Comments as ``{key: [values]}`` (repeated keys, e.g. ``radar``, joined) and the sizes."""
    if stream.readline().strip() != b"P5":
        raise RadarFormatError(f"{path}: not a binary PGM (P5) file")
    comments: dict[str, list[str]] = {}
    numbers: list[int] = []
    while len(numbers) < 3:
        line = stream.readline()
        if not line:
            raise RadarFormatError(f"{path}: PGM header ends before width, height and maxval")
        text = line.decode("ascii", errors="replace").strip()
        if text.startswith("#"):
            words = text[1:].split()
            if len(words) >= 2 and words[-1] != "{":
                key = words[0]
                if key in comments:
                    comments[key] = [*comments[key], ";", *words[1:]]
                else:
                    comments[key] = words[1:]
            continue
        try:
            numbers.extend(int(word) for word in text.split())
        except ValueError as err:
            raise RadarFormatError(f"{path}: bad PGM header line {text!r}") from err
    width, height, maxval = numbers[:3]
    return comments, width, height, maxval


def _float(comments: dict[str, list[str]], key: str, path: Path, index: int = 0) -> float:
    try:
        return float(comments[key][index].rstrip("ENen"))
    except (KeyError, IndexError, ValueError) as err:
        raise RadarFormatError(f"{path}: PGM header lacks a numeric '{key}' comment") from err


def _grid(comments: dict[str, list[str]], nx: int, ny: int, path: Path) -> Grid:
    kind = comments.get("type", ["?"])[0]
    lat_0 = _float(comments, "centrallatitude", path)
    if kind != "stereographic" or lat_0 != 90.0:
        raise RadarFormatError(
            f"{path}: projection '{kind}' with centre latitude {lat_0} is not supported "
            "(north polar stereographic is)"
        )
    lon_0 = _float(comments, "centrallongitude", path)
    lat_ts = _float(comments, "truelatitude", path)
    dx = _float(comments, "metersperpixel_x", path)
    dy = _float(comments, "metersperpixel_y", path)
    lon = np.array([_float(comments, "bottomleft", path, 0), _float(comments, "topright", path, 0)])
    lat = np.array([_float(comments, "bottomleft", path, 1), _float(comments, "topright", path, 1)])

    def stereographic(radius: float) -> str:
        return (
            f"+proj=stere +lat_0=90 +lon_0={lon_0:g} +lat_ts={lat_ts:g} +R={radius:.0f} "
            "+x_0=0 +y_0=0 +units=m +no_defs"
        )

    # on a sphere the projected lengths scale with the radius: solve it on a 1000 km one
    ux, uy = project(crs_from_proj4(stereographic(1e6))[0], lon, lat)
    radius_x = nx * dx / (ux[1] - ux[0]) * 1e6
    radius_y = ny * dy / (uy[1] - uy[0]) * 1e6
    if not (6.3e6 < radius_x < 6.4e6) or abs(radius_x - radius_y) > 1e-5 * radius_x:
        raise RadarFormatError(
            f"{path}: corners and pixel size do not fit a spherical polar stereographic grid "
            f"(radius {radius_x:.1f} m from x, {radius_y:.1f} m from y)"
        )
    radius = float(round((radius_x + radius_y) / 2))
    crs, proj4 = crs_from_proj4(stereographic(radius))
    x, y = project(crs, lon, lat)
    attrs = cf_attributes(
        crs,
        proj4,
        comment=(
            "earth radius solved from the grid corners (bottomleft, topright) and "
            "metersperpixel in the PGM header"
        ),
    )
    return Grid.from_upper_left_corner(
        nx=nx, ny=ny, left=float(x[0]), top=float(y[1]), dx=dx, dy=dy, crs=attrs
    )


def read_header(path: Path) -> FrameInfo:
    """Time, grid and coding of an FMI PGM composite."""
    with _open(path) as stream:
        comments, width, height, maxval = _parse_header(stream, path)
    if maxval > 255:
        raise RadarFormatError(f"{path}: 16-bit PGM (maxval {maxval}) is not supported")
    param = " ".join(comments.get("param", ["?"]))
    if "reflectivity" not in param.lower():
        raise RadarFormatError(f"{path}: param '{param}' is not a reflectivity")
    try:
        stamp = comments["obstime"][0]
        time = np.datetime64(
            f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}", "ns"
        )
    except (KeyError, ValueError, IndexError) as err:
        raise RadarFormatError(f"{path}: no valid 'obstime' comment") from err
    coding: dict[str, Any] = dict(DEFAULT_CODING)
    for key in coding:
        if key in comments:
            coding[key] = _float(comments, key, path)
    radars = [words[0] for words in _split(comments.get("radar", []))]
    product = " ".join(comments.get("productname", []) + comments.get("producttype", []))
    return FrameInfo(
        path=str(path),
        format=FORMAT,
        time=time,
        grid=_grid(comments, width, height, path),
        variable="reflectivity",
        var_attrs={
            "comment": (
                f"{param}: dBZ = {coding['gain']:g} * DN + {coding['offset']:g}; "
                f"DN {coding['nodata']:g} (no data) -> NaN; DN 0 is the scale floor (no echo)"
            ),
        },
        decode={**coding, "shape": (height, width)},
        global_attrs={
            "institution": "Finnish Meteorological Institute (FMI)",
            "source": (
                f"FMI radar composite {' '.join(comments.get('composite_area', []))} "
                f"{product}; radars: {', '.join(radars)}"
            ),
            "title": f"FMI radar composite, {param}",
        },
    )


def _split(words: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for word in words:
        if word == ";":
            groups.append([])
        else:
            groups[-1].append(word)
    return [group for group in groups if group]


def read_data(info: FrameInfo) -> np.ndarray:
    """Reflectivity in dBZ (float32, NaN where no data)."""
    path = Path(info.path)
    height, width = info.decode["shape"]
    with _open(path) as stream:
        _parse_header(stream, path)
        payload = stream.read()
    if len(payload) < height * width:
        raise RadarFormatError(f"{path}: truncated PGM ({len(payload)} of {height * width} bytes)")
    raw = np.frombuffer(payload[: height * width], dtype=np.uint8).reshape(height, width)
    values = raw.astype(np.float32) * np.float32(info.decode["gain"]) + np.float32(
        info.decode["offset"]
    )
    values[raw == info.decode["nodata"]] = np.nan
    return values
