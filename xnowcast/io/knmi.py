"""KNMI HDF5 radar composites (KNMI Data Centre "RAD_NL25" products).

Decoded from the metadata that every file carries (KNMI HDF5 product format):

* ``/overview`` ``product_datetime_start`` / ``product_datetime_end``: the
  accumulation interval; the time stamp is its end (as in the file name);
* ``/image1/image_data``: the raw pixel values; ``/image1/calibration``
  ``calibration_formulas`` (e.g. ``GEO=0.01*PV+0.0``) turns them into the
  quantity named by ``/image1`` ``image_geo_parameter``;
  ``calibration_missing_data`` and ``calibration_out_of_image`` mark missing
  pixels (NaN);
* ``/geographic``: the grid (``geo_number_columns``/``rows``,
  ``geo_pixel_size_x``/``y`` in ``geo_dim_pixel`` units, ``geo_column_offset``
  and ``geo_row_offset`` in pixels from the projection origin, so the first
  row's centre is at ``(row_offset + 0.5) * pixel_size_y``) and
  ``/geographic/map_projection`` ``projection_proj4_params`` (lengths in the
  pixel unit, kilometres for NL25).

Precipitation accumulations (mm per 5 minutes) become a mean rain rate in mm h-1.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid, rate_from_accumulation_attrs
from xnowcast.io._crs import cf_attributes, crs_from_proj4
from xnowcast.io._hdf5 import HDF5_SIGNATURE, LOCK, text

__all__ = ["LOCK", "read_data", "read_header", "sniff"]

FORMAT = "knmi_hdf5"

_FORMULA = re.compile(
    r"GEO\s*=\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*\*\s*PV\s*([-+]\s*[0-9.]+(?:[eE][-+]?\d+)?)?"
)
_UNITS = {"KM": 1000.0, "M": 1.0}


def _number(value: Any) -> float:
    return float(np.asarray(value).reshape(-1)[0])


def sniff(path: Path, head: bytes) -> bool:
    """True for an HDF5 file with the KNMI ``image1``/``geographic``/``overview`` groups."""
    if not head.startswith(HDF5_SIGNATURE):
        return False
    try:
        with h5py.File(path, "r") as f:
            return all(name in f for name in ("image1", "geographic", "overview"))
    except OSError:
        return False


def _parse_time(text: str, path: Path) -> dt.datetime:
    try:
        return dt.datetime.strptime(text.split(".")[0].title(), "%d-%b-%Y;%H:%M:%S")
    except ValueError as err:
        raise RadarFormatError(f"{path}: cannot read the product time {text!r}") from err


def _calibration(f: h5py.File, path: Path) -> tuple[float, float, list[int]]:
    cal = f["image1/calibration"].attrs
    formula = text(cal.get("calibration_formulas", b""))
    match = _FORMULA.search(formula)
    if match is None:
        raise RadarFormatError(f"{path}: cannot read the calibration formula {formula!r}")
    gain = float(match.group(1))
    offset = float(match.group(2).replace(" ", "")) if match.group(2) else 0.0
    codes = [
        int(_number(cal[key]))
        for key in ("calibration_missing_data", "calibration_out_of_image")
        if key in cal
    ]
    return gain, offset, codes


def read_header(path: Path) -> FrameInfo:
    """Time, grid and variable of a KNMI HDF5 file, without reading its values."""
    with h5py.File(path, "r") as f:
        overview = f["overview"].attrs
        end = _parse_time(text(overview["product_datetime_end"]), path)
        start = (
            _parse_time(text(overview["product_datetime_start"]), path)
            if "product_datetime_start" in overview
            else None
        )
        image = f["image1"].attrs
        parameter = text(image.get("image_geo_parameter", b""))
        geo = f["geographic"].attrs
        unit_name = text(geo.get("geo_dim_pixel", b"KM")).split(",")[0].upper()
        if unit_name not in _UNITS:
            raise RadarFormatError(f"{path}: pixel unit {unit_name!r} is not KM or M")
        scale = _UNITS[unit_name]
        nx, ny = int(_number(geo["geo_number_columns"])), int(_number(geo["geo_number_rows"]))
        psx = _number(geo["geo_pixel_size_x"]) * scale
        psy = _number(geo["geo_pixel_size_y"]) * scale
        col0, row0 = _number(geo["geo_column_offset"]), _number(geo["geo_row_offset"])
        proj4 = text(f["geographic/map_projection"].attrs["projection_proj4_params"])
        shape = f["image1/image_data"].shape
        if shape != (ny, nx):
            raise RadarFormatError(f"{path}: image shape {shape} but metadata says {(ny, nx)}")
        gain, offset, codes = _calibration(f, path)
        radars = [
            text(f[name].attrs.get("radar_name", name.encode()))
            for name in sorted(f)
            if re.fullmatch(r"radar\d+", name)
        ]
        product = text(image.get("image_product_name", b""))
        group = text(overview.get("product_group_name", b""))

    crs = cf_attributes(*crs_from_proj4(proj4, length_unit="km" if scale == 1000.0 else "m"))
    grid = Grid(
        nx=nx,
        ny=ny,
        x0=(col0 + 0.5) * psx,
        y0=(row0 + 0.5) * psy,
        dx=abs(psx),
        dy=psy,
        crs=crs,
    )
    if psx < 0:
        raise RadarFormatError(f"{path}: columns running westward are not supported")
    var_attrs: dict[str, Any] = {"knmi_geo_parameter": parameter}
    if parameter.upper().startswith("ACCUMULATED_PRECIPITATION"):
        if start is None or end <= start:
            raise RadarFormatError(f"{path}: accumulation without a valid start and end time")
        minutes = (end - start).total_seconds() / 60.0
        variable = "precipitation"
        var_attrs.update(rate_from_accumulation_attrs(minutes, "mm"))
    elif "REFLECTIVITY" in parameter.upper():
        variable, minutes = "reflectivity", None
    else:
        raise RadarFormatError(
            f"{path}: image_geo_parameter {parameter!r} is not an accumulated precipitation "
            "or a reflectivity"
        )
    return FrameInfo(
        path=str(path),
        format=FORMAT,
        time=np.datetime64(end, "ns"),
        grid=grid,
        variable=variable,
        var_attrs=var_attrs,
        decode={"gain": gain, "offset": offset, "missing": codes, "minutes": minutes},
        global_attrs={
            "institution": "KNMI (Royal Netherlands Meteorological Institute)",
            "source": f"KNMI radar product {product} ({group}); radars: {', '.join(radars)}",
            "title": f"KNMI radar composite, {parameter}",
        },
    )


def read_data(info: FrameInfo) -> np.ndarray:
    """Decoded field (float32; mm h-1 for precipitation, dBZ for reflectivity; NaN missing)."""
    cal = info.decode
    with h5py.File(info.path, "r") as f:
        raw = f["image1/image_data"][...]
    values = raw.astype(np.float64) * cal["gain"] + cal["offset"]
    values[np.isin(raw, cal["missing"])] = np.nan
    if info.variable == "precipitation":
        values *= 60.0 / cal["minutes"]
    return values.astype(np.float32)
