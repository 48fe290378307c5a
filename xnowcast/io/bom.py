"""Australian Bureau of Meteorology Rainfields 3 products (CF netCDF4, e.g. ``prcp-c10``).

Everything is read from the file's own CF metadata (CF-1.7):

* the field is the variable whose ``standard_name`` is ``precipitation_amount``
  (``kg m-2`` over the accumulation, i.e. mm of water) or ``rainfall_rate``;
  its ``scale_factor``/``add_offset``/``_FillValue`` decode it (fill -> NaN);
* the grid is the ``projection_x_coordinate``/``projection_y_coordinate``
  coordinates (cell centres, ``units`` km or m) and the grid mapping named by
  the field's ``grid_mapping`` attribute (Albers conical equal area for the
  radar products), turned into a CRS with ``pyproj.CRS.from_cf``;
* the time stamp is the scalar variable with ``standard_name = time``
  (``valid_time``: the **end** of the accumulation); ``start_time`` gives the
  accumulation's start.

Accumulations are returned as the mean rain rate over the accumulation
(``precipitation`` in mm h-1 = kg m-2 per interval x 60 / minutes: x 6 for the
10-minute ``prcp-c10`` product), like the other readers' accumulations; the
variable's ``cell_methods`` and ``comment`` record the conversion, and
``xnowcast.units`` converts back (``mm`` with the 10-minute step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid, rate_from_accumulation_attrs
from xnowcast.io._crs import cf_attributes, crs_from_cf
from xnowcast.io._hdf5 import HDF5_SIGNATURE, LOCK, text

__all__ = ["LOCK", "read_data", "read_header", "read_window", "sniff"]

FORMAT = "bom_netcdf"

#: CF standard names of the fields this reader decodes.
STANDARD_NAMES = ("precipitation_amount", "rainfall_rate")
_LENGTH = {"km": 1000.0, "m": 1.0, "metre": 1.0, "meter": 1.0}


def sniff(path: Path, head: bytes) -> bool:
    """True for a netCDF4 file with a CF ``precipitation_amount``/``rainfall_rate`` on a projected grid."""
    if not head.startswith(HDF5_SIGNATURE):
        return False
    try:
        with h5py.File(path, "r") as f:
            if not text(f.attrs.get("Conventions", b"")).startswith("CF-"):
                return False
            return any(
                isinstance(obj, h5py.Dataset)
                and text(obj.attrs.get("standard_name", b"")) in STANDARD_NAMES
                and "grid_mapping" in obj.attrs
                for obj in f.values()
            )
    except OSError:
        return False


def _field(ds: netCDF4.Dataset, path: Path) -> netCDF4.Variable:
    for var in ds.variables.values():
        if getattr(var, "standard_name", None) in STANDARD_NAMES and var.ndim == 2:
            return var
    raise RadarFormatError(f"{path}: no 2-D variable with standard_name {STANDARD_NAMES}")


def _axis(ds: netCDF4.Dataset, name: str, path: Path) -> tuple[float, float, int]:
    """``(first centre, step, size)`` of a projection coordinate, in metres."""
    var = ds.variables[name]
    scale = _LENGTH.get(getattr(var, "units", "m"))
    if scale is None:
        raise RadarFormatError(f"{path}: coordinate {name} has units {var.units!r}, not km or m")
    values = np.asarray(var[:], dtype=np.float64) * scale
    steps = np.diff(values)
    if values.size < 2 or not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-6 * abs(steps[0])):
        raise RadarFormatError(f"{path}: coordinate {name} is not a regular grid")
    return float(values[0]), float(steps[0]), int(values.size)


def _time(ds: netCDF4.Dataset, name: str, path: Path) -> np.datetime64:
    var = ds.variables[name]
    stamp = netCDF4.num2date(
        var[:], var.units, getattr(var, "calendar", "standard"), only_use_cftime_datetimes=False
    )
    return np.datetime64(stamp.replace(tzinfo=None), "ns")


def _time_variables(ds: netCDF4.Dataset, path: Path) -> tuple[str, str | None]:
    valid = [
        name
        for name, var in ds.variables.items()
        if var.ndim == 0 and getattr(var, "standard_name", None) == "time"
    ]
    if not valid:
        raise RadarFormatError(f"{path}: no scalar variable with standard_name 'time'")
    start = "start_time" if "start_time" in ds.variables else None
    return valid[0], start


def read_header(path: Path) -> FrameInfo:
    """Time, grid and coding of a Rainfields 3 netCDF file, from its CF metadata."""
    with netCDF4.Dataset(path) as ds:
        field = _field(ds, path)
        dims = field.dimensions
        y0, dy, ny = _axis(ds, dims[0], path)
        x0, dx, nx = _axis(ds, dims[1], path)
        mapping = ds.variables[field.grid_mapping]
        cf = {key: mapping.getncattr(key) for key in mapping.ncattrs()}
        crs = crs_from_cf(cf)
        valid_name, start_name = _time_variables(ds, path)
        time = _time(ds, valid_name, path)
        standard_name = field.standard_name
        units = getattr(field, "units", "")
        var_attrs: dict[str, Any] = {"source_standard_name": standard_name}
        minutes = None
        if standard_name == "precipitation_amount":
            if start_name is None:
                raise RadarFormatError(f"{path}: an accumulation without a start_time variable")
            minutes = float((time - _time(ds, start_name, path)) / np.timedelta64(1, "m"))
            if not minutes > 0 or units not in ("kg m-2", "mm"):
                raise RadarFormatError(
                    f"{path}: accumulation over {minutes} minutes in {units!r} "
                    "(expected a positive interval in kg m-2 or mm)"
                )
            var_attrs.update(rate_from_accumulation_attrs(minutes, units))
        elif units not in ("mm h-1", "mm/h", "mm hr-1"):
            raise RadarFormatError(f"{path}: rainfall_rate in {units!r}, not mm h-1")
        global_attrs = {
            key: text(ds.getncattr(key))
            for key in ("institution", "source", "title", "licence", "station_name", "station_id")
            if key in ds.ncattrs()
        }
        if "licence" in global_attrs:
            global_attrs["license"] = global_attrs.pop("licence")
        name, storage = field.name, field.chunking()
    grid = Grid(nx=nx, ny=ny, x0=x0, y0=y0, dx=dx, dy=dy, crs=cf_attributes(crs))
    if dx <= 0:
        raise RadarFormatError(f"{path}: columns running westward are not supported")
    return FrameInfo(
        path=str(path),
        format=FORMAT,
        time=time,
        grid=grid,
        variable="precipitation",
        var_attrs=var_attrs,
        global_attrs=global_attrs,
        decode={"name": name, "minutes": minutes},
        storage_chunks=tuple(storage) if isinstance(storage, list) else None,
    )


def read_window(info: FrameInfo, rows: slice, cols: slice) -> np.ndarray:
    """Rain rate (mm h-1, float32, NaN where the file has its fill value) in a window."""
    with netCDF4.Dataset(info.path) as ds:
        var = ds.variables[info.decode["name"]]
        var.set_auto_maskandscale(True)
        values = np.ma.filled(var[rows, cols].astype(np.float64), np.nan)
    if info.decode["minutes"]:
        values = values * (60.0 / info.decode["minutes"])
    return values.astype(np.float32)


def read_data(info: FrameInfo) -> np.ndarray:
    """Rain rate of the whole file (mm h-1, float32, NaN where missing)."""
    return read_window(info, slice(None), slice(None))
