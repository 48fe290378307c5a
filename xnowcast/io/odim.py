"""ODIM HDF5 composites (the OPERA / EUMETNET information model, e.g. RMI's QPE).

Decoded from the ODIM_H5 specification (Michelson et al., *EUMETNET OPERA
weather radar information model for implementation with the HDF5 file format*,
version 2.2+):

* the nominal time is ``/what/date`` + ``/what/time`` (UTC);
* the field is ``/datasetN/dataM/data``; its ``what`` group (or the enclosing
  ``datasetN/what``, then ``/what``: the lowest level wins) gives ``quantity``,
  ``gain``, ``offset``, ``nodata`` and ``undetect``; physical value =
  ``offset + gain * raw``; ``nodata`` pixels are missing (NaN), ``undetect``
  pixels were observed without echo (0 for a rain rate);
* the Cartesian grid is ``xsize``/``ysize``/``xscale``/``yscale`` and the
  projection ``projdef`` (proj4) in ``where``; the upper-left corner is
  ``UL_x``/``UL_y`` when present (in projection metres), otherwise the
  projected ``UL_lon``/``UL_lat`` corner.  Rows run from north to south.

Files whose data are already floating point with NaN for no data (RMI's QPE)
carry no ``gain``/``offset``/``nodata``; NaN then stays missing and 0 means
observed without rain.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid
from xnowcast.io._proj import (
    ELLIPSOIDS,
    lambert_conformal_conic,
    parse_proj4,
    polar_stereographic,
    proj4_to_cf,
)

__all__ = ["read_data", "read_header", "sniff"]

FORMAT = "odim_hdf5"

#: ODIM quantities this reader decodes, in order of preference, with the variable they become.
QUANTITIES: dict[str, str] = {"RATE": "precipitation", "DBZH": "reflectivity", "TH": "reflectivity"}

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("ascii", errors="replace").strip("\x00 ")
    return str(value)


def sniff(path: Path, head: bytes) -> bool:
    """True for an HDF5 file whose root ``Conventions`` attribute says ``ODIM_H5``."""
    if not head.startswith(_HDF5_SIGNATURE):
        return False
    try:
        with h5py.File(path, "r") as f:
            return _text(f.attrs.get("Conventions", b"")).startswith("ODIM_H5")
    except OSError:
        return False


def _numbered(group: h5py.Group, prefix: str) -> list[str]:
    names = [name for name in group if re.fullmatch(rf"{prefix}\d+", name)]
    return sorted(names, key=lambda name: int(name[len(prefix) :]))


def _what(f: h5py.File, dataset: str, data: str) -> dict[str, Any]:
    """Merged ``what`` attributes: root, then dataset, then data group (lowest wins)."""
    merged: dict[str, Any] = {}
    for path in ("what", f"{dataset}/what", f"{dataset}/{data}/what"):
        if path in f:
            merged.update(f[path].attrs)
    return merged


def _where(f: h5py.File, dataset: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in ("where", f"{dataset}/where"):
        if path in f:
            merged.update(f[path].attrs)
    return merged


def _select(f: h5py.File, path: Path) -> tuple[str, str, str]:
    """(dataset, data, quantity) of the preferred quantity in the file."""
    found: dict[str, tuple[str, str]] = {}
    for dataset in _numbered(f, "dataset"):
        for data in _numbered(f[dataset], "data"):
            qty = _text(_what(f, dataset, data).get("quantity", b""))
            found.setdefault(qty, (dataset, data))
    for qty in QUANTITIES:
        if qty in found:
            return (*found[qty], qty)
    raise RadarFormatError(
        f"{path}: no ODIM quantity this reader decodes (found {sorted(found)}; "
        f"supported: {list(QUANTITIES)})"
    )


def _corner(where: dict[str, Any], proj4: str, path: Path) -> tuple[float, float]:
    """Projected outer upper-left corner (m)."""
    if "UL_x" in where and "UL_y" in where:
        return float(where["UL_x"]), float(where["UL_y"])
    if "UL_lon" not in where or "UL_lat" not in where:
        raise RadarFormatError(f"{path}: no UL_x/UL_y nor UL_lon/UL_lat in the where groups")
    p = parse_proj4(proj4)
    cf = proj4_to_cf(proj4)
    a = float(cf.get("semi_major_axis", cf.get("earth_radius", ELLIPSOIDS["WGS84"][0])))
    rf = cf.get("inverse_flattening")
    if rf is None and "semi_minor_axis" in cf:
        rf = a / (a - float(cf["semi_minor_axis"]))
    lon, lat = float(where["UL_lon"]), float(where["UL_lat"])
    fe, fn = float(cf["false_easting"]), float(cf["false_northing"])
    if cf["grid_mapping_name"] == "lambert_conformal_conic":
        x, y = lambert_conformal_conic(
            lon,
            lat,
            lat_1=float(p["lat_1"]),
            lat_2=float(p.get("lat_2") or p["lat_1"]),
            lat_0=float(cf["latitude_of_projection_origin"]),
            lon_0=float(cf["longitude_of_central_meridian"]),
            a=a,
            rf=rf,
            false_easting=fe,
            false_northing=fn,
        )
    elif cf["grid_mapping_name"] == "polar_stereographic" and "standard_parallel" in cf:
        if float(cf["latitude_of_projection_origin"]) != 90.0:
            raise RadarFormatError(f"{path}: south polar grids need UL_x/UL_y")
        x, y = polar_stereographic(
            lon,
            lat,
            lon_0=float(cf["straight_vertical_longitude_from_pole"]),
            lat_ts=float(cf["standard_parallel"]),
            a=a,
            rf=rf,
            false_easting=fe,
            false_northing=fn,
        )
    else:
        raise RadarFormatError(
            f"{path}: the grid corner is given only in longitude/latitude and the projection "
            f"{cf['grid_mapping_name']} is not one xnowcast can project (lcc, polar stereographic)"
        )
    return float(x), float(y)


def _institution(what: dict[str, Any], how: dict[str, Any]) -> str:
    source = _text(what.get("source", b""))
    fields = dict(item.split(":", 1) for item in source.split(",") if ":" in item)
    if "ORG" in fields:
        return f"WMO originating centre {fields['ORG']}"
    if _text(how.get("software", b"")).lower().startswith("rmiradlib"):
        return "Royal Meteorological Institute of Belgium (RMI)"
    return f"unknown (ODIM what/source: {source})"


def read_header(path: Path) -> FrameInfo:
    """Time, grid and variable of an ODIM HDF5 composite, without reading its values."""
    with h5py.File(path, "r") as f:
        dataset, data, qty = _select(f, path)
        root_what = dict(f["what"].attrs) if "what" in f else {}
        how = dict(f["how"].attrs) if "how" in f else {}
        where = _where(f, dataset)
        try:
            stamp = _text(root_what["date"]) + _text(root_what["time"])
            time = np.datetime64(
                f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}",
                "ns",
            )
        except (KeyError, ValueError) as err:
            raise RadarFormatError(f"{path}: no valid /what/date and /what/time") from err
        try:
            proj4 = _text(where["projdef"])
            nx, ny = int(where["xsize"]), int(where["ysize"])
            dx, dy = float(where["xscale"]), float(where["yscale"])
        except KeyError as err:
            raise RadarFormatError(f"{path}: ODIM where group lacks {err}") from err
        shape = f[f"{dataset}/{data}/data"].shape
        if shape != (ny, nx):
            raise RadarFormatError(f"{path}: data shape {shape} but where says {(ny, nx)}")
        crs = proj4_to_cf(proj4)
        left, top = _corner(where, proj4, path)
        product = (
            _text(f[f"{dataset}/what"].attrs.get("product", b""))
            if (f"{dataset}/what" in f)
            else ""
        )
        var_attrs: dict[str, Any] = {"odim_quantity": qty, "odim_path": f"/{dataset}/{data}"}
        decode = {"dataset": dataset, "data": data}
        global_attrs = {
            "institution": _institution(root_what, how),
            "source": (
                f"ODIM_H5 {_text(root_what.get('object', b'COMP'))} product {product or 'unknown'}"
                f" ({_text(how.get('software', b'unknown software'))}); radars: "
                f"{_text(how.get('nodes', root_what.get('source', b'unknown')))}"
            ),
            "title": f"radar composite, ODIM quantity {qty}",
        }
    grid = Grid.from_upper_left_corner(nx=nx, ny=ny, left=left, top=top, dx=dx, dy=dy, crs=crs)
    return FrameInfo(
        path=str(path),
        format=FORMAT,
        time=time,
        grid=grid,
        variable=QUANTITIES[qty],
        var_attrs=var_attrs,
        global_attrs=global_attrs,
        decode=decode,
    )


def read_data(info: FrameInfo) -> np.ndarray:
    """Decoded field of the file described by ``info`` (float32, NaN where missing)."""
    path = info.path
    dataset, data = info.decode["dataset"], info.decode["data"]
    with h5py.File(path, "r") as f:
        raw = f[f"{dataset}/{data}/data"][...]
        what = _what(f, dataset, data)
    gain = float(what.get("gain", 1.0))
    offset = float(what.get("offset", 0.0))
    values = raw.astype(np.float64) * gain + offset
    if "nodata" in what:
        values[raw == what["nodata"]] = np.nan
    if "undetect" in what and info.variable == "precipitation":
        values[raw == what["undetect"]] = 0.0
    return values.astype(np.float32)
