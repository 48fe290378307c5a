"""ODIM HDF5 composites (the OPERA / EUMETNET information model: OPERA, RMI's QPE, ...).

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

Quantities: ``RATE`` (mm h-1) and ``ACRR`` (an accumulation in mm over
``startdate/starttime``-``enddate/endtime``, returned as the mean rain rate
over that interval) become ``precipitation``; ``DBZH``/``TH`` (dBZ) become
``reflectivity``, whose ``undetect`` (observed, no echo) is set to
:data:`UNDETECT_DBZ` (-32 dBZ, the floor of the OPERA reflectivity scale and of
FMI's: a rain rate of about 1e-4 mm h-1) rather than 0 dBZ, which would be an
echo.  A quality field (a ``QIND`` dataset, as in the 2 km OPERA composite, or
a ``quality1`` group under the data, as in the CIRRUS composite) becomes the
variable ``quality`` (0-1; its ``nodata`` and ``undetect`` -> NaN).  Projections
(``projdef``, any that PROJ knows, e.g. OPERA's Lambert azimuthal equal area)
go through pyproj.  Windows are read from the HDF5 chunks alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid, rate_from_accumulation_attrs
from xnowcast.io._crs import cf_attributes, crs_from_proj4, project
from xnowcast.io._hdf5 import HDF5_SIGNATURE, LOCK, text

__all__ = ["LOCK", "read_data", "read_extra", "read_header", "read_window", "sniff"]

FORMAT = "odim_hdf5"

#: ODIM quantities this reader decodes, in order of preference, with the variable they become.
QUANTITIES: dict[str, str] = {
    "RATE": "precipitation",
    "ACRR": "precipitation",
    "DBZH": "reflectivity",
    "TH": "reflectivity",
}
#: Reflectivity given to ``undetect`` pixels (observed, no echo).
UNDETECT_DBZ = -32.0
#: CF attributes of the quality field.
QUALITY_ATTRS = {
    "long_name": "quality index of the composite (0 worst, 1 best)",
    "units": "1",
    "valid_range": [0.0, 1.0],
}


def sniff(path: Path, head: bytes) -> bool:
    """True for an HDF5 file whose root ``Conventions`` attribute says ``ODIM_H5``."""
    if not head.startswith(HDF5_SIGNATURE):
        return False
    try:
        with h5py.File(path, "r") as f:
            return text(f.attrs.get("Conventions", b"")).startswith("ODIM_H5")
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
            qty = text(_what(f, dataset, data).get("quantity", b""))
            found.setdefault(qty, (dataset, data))
    for qty in QUANTITIES:
        if qty in found:
            return (*found[qty], qty)
    raise RadarFormatError(
        f"{path}: no ODIM quantity this reader decodes (found {sorted(found)}; "
        f"supported: {list(QUANTITIES)})"
    )


def _corner(where: dict[str, Any], crs: Any, path: Path) -> tuple[float, float]:
    """Projected outer upper-left corner (m): ``UL_x``/``UL_y``, else ``UL_lon``/``UL_lat`` projected."""
    if "UL_x" in where and "UL_y" in where:
        return float(where["UL_x"]), float(where["UL_y"])
    if "UL_lon" not in where or "UL_lat" not in where:
        raise RadarFormatError(f"{path}: no UL_x/UL_y nor UL_lon/UL_lat in the where groups")
    x, y = project(crs, float(where["UL_lon"]), float(where["UL_lat"]))
    return float(x), float(y)


def _quality(f: h5py.File, dataset: str, data: str) -> str | None:
    """HDF5 path of the quality field that goes with ``dataset/data``, if any."""
    group = f[f"{dataset}/{data}"]
    for name in _numbered(group, "quality"):
        if "data" in group[name]:
            return f"/{dataset}/{data}/{name}"
    for other in _numbered(f, "dataset"):
        for sub in _numbered(f[other], "data"):
            if text(_what(f, other, sub).get("quantity", b"")) == "QIND":
                if f[f"{other}/{sub}/data"].shape == group["data"].shape:
                    return f"/{other}/{sub}"
    return None


def _interval_minutes(what: dict[str, Any], path: Path) -> float:
    try:
        start = _stamp(what["startdate"], what["starttime"])
        end = _stamp(what["enddate"], what["endtime"])
    except (KeyError, ValueError) as err:
        raise RadarFormatError(f"{path}: ACRR without a valid start and end date/time") from err
    minutes = float((end - start) / np.timedelta64(1, "m"))
    if not minutes > 0:
        raise RadarFormatError(f"{path}: ACRR accumulation interval of {minutes} minutes")
    return minutes


def _stamp(date: Any, time: Any) -> np.datetime64:
    stamp = text(date) + text(time)
    return np.datetime64(
        f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}", "ns"
    )


def _institution(what: dict[str, Any], how: dict[str, Any]) -> str:
    source = text(what.get("source", b""))
    fields = dict(item.split(":", 1) for item in source.split(",") if ":" in item)
    if "ORG" in fields:
        return f"WMO originating centre {fields['ORG']}"
    if text(how.get("software", b"")).lower().startswith("rmiradlib"):
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
            time = _stamp(root_what["date"], root_what["time"])
        except (KeyError, ValueError) as err:
            raise RadarFormatError(f"{path}: no valid /what/date and /what/time") from err
        try:
            proj4 = text(where["projdef"])
            nx, ny = int(where["xsize"]), int(where["ysize"])
            dx, dy = float(where["xscale"]), float(where["yscale"])
        except KeyError as err:
            raise RadarFormatError(f"{path}: ODIM where group lacks {err}") from err
        field = f[f"{dataset}/{data}/data"]
        shape, storage = field.shape, field.chunks
        if shape != (ny, nx):
            raise RadarFormatError(f"{path}: data shape {shape} but where says {(ny, nx)}")
        crs, proj4_metres = crs_from_proj4(proj4)
        left, top = _corner(where, crs, path)
        quality = _quality(f, dataset, data)
        what = _what(f, dataset, data)
        product = (
            text(f[f"{dataset}/what"].attrs.get("product", b"")) if (f"{dataset}/what" in f) else ""
        )
        var_attrs: dict[str, Any] = {"odim_quantity": qty, "odim_path": f"/{dataset}/{data}"}
        decode: dict[str, Any] = {"dataset": dataset, "data": data, "quality": quality}
        if qty == "ACRR":
            minutes = _interval_minutes(what, path)
            decode["minutes"] = minutes
            var_attrs.update(rate_from_accumulation_attrs(minutes, "mm"))
        elif QUANTITIES[qty] == "reflectivity" and "undetect" in what:
            var_attrs["comment"] = (
                f"ODIM undetect (observed, no echo) set to {UNDETECT_DBZ:g} dBZ; nodata -> NaN"
            )
        global_attrs = {
            "institution": _institution(root_what, how),
            "source": (
                f"ODIM_H5 {text(root_what.get('object', b'COMP'))} product {product or 'unknown'}"
                f" ({text(how.get('software', b'unknown software'))}); radars: "
                f"{text(how.get('nodes', root_what.get('source', b'unknown')))}"
            ),
            "title": f"radar composite, ODIM quantity {qty}",
        }
    grid = Grid.from_upper_left_corner(
        nx=nx, ny=ny, left=left, top=top, dx=dx, dy=dy, crs=cf_attributes(crs, proj4_metres)
    )
    extras = {}
    if quality:
        extras["quality"] = {**QUALITY_ATTRS, "odim_path": quality}
    return FrameInfo(
        path=str(path),
        format=FORMAT,
        time=time,
        grid=grid,
        variable=QUANTITIES[qty],
        var_attrs=var_attrs,
        global_attrs=global_attrs,
        decode=decode,
        extras=extras,
        storage_chunks=tuple(storage) if storage else None,
    )


def _decode(raw: np.ndarray, what: dict[str, Any], undetect_value: float | None) -> np.ndarray:
    """``offset + gain * raw``; ``nodata`` -> NaN, ``undetect`` -> ``undetect_value``.

    Computed in float64, in place when ``raw`` is already float64 (a fresh read:
    CIRRUS frames are 130 MB), so a frame costs one float64 copy, not three.
    """
    nodata = raw == what["nodata"] if "nodata" in what else None
    undetect = (
        raw == what["undetect"] if "undetect" in what and undetect_value is not None else None
    )
    values = raw.astype(np.float64, copy=False)
    values *= float(what.get("gain", 1.0))
    values += float(what.get("offset", 0.0))
    if nodata is not None:
        values[nodata] = np.nan
    if undetect is not None:
        values[undetect] = undetect_value
    return values


def read_window(info: FrameInfo, rows: slice, cols: slice) -> np.ndarray:
    """Decoded window of the field (float32, NaN where missing); reads only its HDF5 chunks."""
    dataset, data = info.decode["dataset"], info.decode["data"]
    with h5py.File(info.path, "r") as f:
        raw = f[f"{dataset}/{data}/data"][rows, cols]
        what = _what(f, dataset, data)
    undetect = 0.0 if info.variable == "precipitation" else UNDETECT_DBZ
    values = _decode(raw, what, undetect)
    if "minutes" in info.decode:
        values *= 60.0 / info.decode["minutes"]
    return values.astype(np.float32)


def read_data(info: FrameInfo) -> np.ndarray:
    """Decoded field of the file described by ``info`` (float32, NaN where missing)."""
    return read_window(info, slice(None), slice(None))


def read_extra(info: FrameInfo, name: str, rows: slice, cols: slice) -> np.ndarray:
    """The window of the quality field (``name="quality"``; float32, NaN where none)."""
    if name != "quality" or not info.decode.get("quality"):
        raise RadarFormatError(f"{info.path}: no {name!r} field")
    path = info.decode["quality"]
    with h5py.File(info.path, "r") as f:
        raw = f[f"{path}/data"][rows, cols]
        what: dict[str, Any] = {}
        for group in (f"{path.rsplit('/', 1)[0]}/what", f"{path}/what"):
            if group in f:
                what.update(f[group].attrs)
    values = _decode(raw, what, np.nan)
    return values.astype(np.float32)
