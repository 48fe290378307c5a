"""Shared CF assembly: per-file headers and decoded frames -> one CF-compliant Dataset.

Every reader (see :mod:`xnowcast.io.protocol`) describes a file with a
:class:`FrameInfo` (its time, its :class:`Grid`, which variable it holds and
the attributes that go with it) and decodes its values with a ``read_data``
function that returns a float32 array in the output units (NaN where missing).
:func:`assemble` checks that the files agree and stacks them along ``time``,
eagerly or lazily (:mod:`xnowcast.io._lazy`: one file per time chunk, spatial
chunks when the reader can read windows).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xnowcast.errors import RadarFormatError, TimeAxisError
from xnowcast.io._lazy import FrameStack, WindowReader, lazy_array, spatial_chunks
from xnowcast.units import QUANTITY_NAMES

__all__ = ["VARIABLES", "FrameInfo", "Grid", "assemble", "rate_from_accumulation_attrs"]

#: CF attributes of the two variables the readers produce.
VARIABLES: dict[str, dict[str, str]] = {
    "precipitation": {"units": "mm h-1", **QUANTITY_NAMES["rate"]},
    "reflectivity": {"units": "dBZ", **QUANTITY_NAMES["dbz"]},
}


@dataclass(frozen=True)
class Grid:
    """A regular grid: cell centres ``x[i] = x0 + i * dx``, ``y[j] = y0 + j * dy``.

    ``y0`` is the northing of the file's first row and ``dy`` is signed: it is
    negative when rows run from north to south (the usual image order).
    Lengths are metres, or degrees when ``geographic`` (a latitude/longitude
    grid: x is the longitude, y the latitude).  ``crs`` holds the CF
    grid-mapping attributes (:func:`xnowcast.io._crs.cf_attributes`).
    """

    nx: int
    ny: int
    x0: float
    y0: float
    dx: float
    dy: float
    crs: dict[str, Any] = field(hash=False, compare=False)
    geographic: bool = False

    @classmethod
    def from_upper_left_corner(
        cls,
        *,
        nx: int,
        ny: int,
        left: float,
        top: float,
        dx: float,
        dy: float,
        crs: dict[str, Any],
    ) -> Grid:
        """Grid whose first row is the northernmost, from the outer upper-left corner."""
        return cls(nx=nx, ny=ny, x0=left + dx / 2, y0=top - dy / 2, dx=dx, dy=-dy, crs=crs)

    @property
    def x(self) -> np.ndarray:
        """Cell-centre eastings (m)."""
        return self.x0 + self.dx * np.arange(self.nx, dtype=float)

    @property
    def y(self) -> np.ndarray:
        """Cell-centre northings (m), in the file's row order."""
        return self.y0 + self.dy * np.arange(self.ny, dtype=float)

    def matches(self, other: Grid, tol: float = 1e-3) -> bool:
        """True when both grids have the same shape and cell centres (within ``tol`` m)."""
        return (
            (self.nx, self.ny) == (other.nx, other.ny)
            and all(
                abs(a - b) <= tol
                for a, b in [
                    (self.x0, other.x0),
                    (self.y0, other.y0),
                    (self.dx, other.dx),
                    (self.dy, other.dy),
                ]
            )
            and self.crs.get("crs_wkt") == other.crs.get("crs_wkt")
        )

    def coordinate_attrs(self, axis: str) -> dict[str, str]:
        """CF attributes of the ``x`` (``axis="X"``) or ``y`` (``"Y"``) coordinate."""
        name = axis.lower()
        if self.geographic:
            long = "longitude" if axis == "X" else "latitude"
            units = "degrees_east" if axis == "X" else "degrees_north"
            return {
                "standard_name": long,
                "long_name": f"{long} (cell centre)",
                "units": units,
                "axis": axis,
            }
        return {
            "standard_name": f"projection_{name}_coordinate",
            "long_name": f"{name} coordinate of projection (cell centre)",
            "units": "m",
            "axis": axis,
        }


@dataclass(frozen=True)
class FrameInfo:
    """What a reader learns from one file's metadata, before decoding its values.

    ``var_attrs`` and ``global_attrs`` of the first file become the Dataset's
    attributes; ``decode`` carries what ``read_data`` needs (gain, codes, ...).
    """

    path: str
    format: str
    time: np.datetime64
    grid: Grid
    variable: str
    var_attrs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    global_attrs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: Reader-private decoding parameters (never written to attributes).
    decode: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: More variables of the file (e.g. ``{"quality": {...CF attrs}}``), read with ``read_extra``.
    extras: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)
    #: Spatial chunks ``(rows, cols)`` for ``chunks="auto"`` (the file's storage chunks or a
    #: multiple of them), when the reader reads windows.
    storage_chunks: tuple[int, int] | None = None


def rate_from_accumulation_attrs(minutes: float, source_units: str = "mm") -> dict[str, Any]:
    """Variable attributes recording that accumulations were turned into a mean rain rate."""
    factor = 60.0 / minutes
    return {
        "cell_methods": f"time: mean (interval: {minutes:g} minutes)",
        "comment": (
            f"converted from {minutes:g}-minute accumulations ({source_units} per {minutes:g} "
            f"min) to the mean rain rate over the interval ending at the time stamp "
            f"(mm h-1 = {source_units} per {minutes:g} min x {factor:g})"
        ),
        "source_units": f"{source_units} per {minutes:g} min",
        "accumulation_minutes": float(minutes),
    }


def _version() -> str:
    package = sys.modules.get("xnowcast")
    version = getattr(package, "__version__", None)
    if version:
        return str(version)
    try:
        return _metadata.version("xnowcast")
    except _metadata.PackageNotFoundError:
        return "unknown"


def _check_consistent(infos: Sequence[FrameInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if info.format != first.format:
            raise RadarFormatError(
                f"files of different formats in one call: {first.path} is {first.format}, "
                f"{info.path} is {info.format}; open them separately"
            )
        if info.variable != first.variable:
            raise RadarFormatError(
                f"{first.path} holds {first.variable} but {info.path} holds {info.variable}"
            )
        if not info.grid.matches(first.grid):
            raise RadarFormatError(
                f"{info.path} is on a different grid than {first.path}; "
                "open files of one grid at a time"
            )
    times = np.array([info.time for info in infos], dtype="datetime64[ns]")
    uniq, counts = np.unique(times, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        paths = [info.path for info in infos if np.datetime64(info.time, "ns") == dup]
        raise TimeAxisError(f"several files have the time stamp {dup}: {paths}")


def _crs_variable(grid: Grid) -> xr.DataArray:
    attrs = dict(grid.crs)
    attrs.setdefault("long_name", "coordinate reference system of the radar grid")
    return xr.DataArray(np.int32(0), attrs=attrs)


def _reader(read: Callable[..., np.ndarray], windowed: bool) -> WindowReader:
    """``read(info, rows, cols)`` from a reader's ``read_window`` or its whole-frame ``read_data``."""
    if windowed:
        return read
    return functools.partial(_whole_frame_then_window, read)


def _whole_frame_then_window(
    read: Callable[[FrameInfo], np.ndarray], info: FrameInfo, rows: slice, cols: slice
) -> np.ndarray:
    return read(info)[rows, cols]


def assemble(
    infos: Sequence[FrameInfo],
    read_data: Callable[[FrameInfo], np.ndarray],
    *,
    chunks: Any = None,
    read_window: WindowReader | None = None,
    read_extra: Callable[[FrameInfo, str, slice, slice], np.ndarray] | None = None,
    lock: Any = None,
) -> xr.Dataset:
    """Stack frames into one CF Dataset (dims ``time, y, x``), sorted by time.

    Parameters
    ----------
    infos : sequence of FrameInfo
        One per file, all of one format, variable and grid.
    read_data : callable
        ``read_data(info) -> float32 array (ny, nx)`` in the variable's CF units.
    chunks : None, dict, int or "auto"
        ``None`` decodes every file now (numpy).  Anything else gives a lazy
        dask array with one file per time chunk: ``{}`` whole frames,
        ``"auto"`` the files' storage chunks in space (readers with
        ``read_window``), a dict's ``y``/``x`` sizes as spatial chunks; a
        ``time`` size (or an int) then merges files into larger time chunks.
    read_window : callable, optional
        ``read_window(info, rows, cols)``: one window of a file, read without
        decoding the rest (spatial chunks read only their part).
    read_extra : callable, optional
        ``read_extra(info, name, rows, cols)`` for the variables named in
        ``info.extras`` (e.g. a quality field).
    lock : lock, optional
        Held while a file is decoded (the reader's ``LOCK``).

    Returns
    -------
    xarray.Dataset
    """
    if not infos:
        raise RadarFormatError("no files to assemble")
    _check_consistent(infos)
    infos = sorted(infos, key=lambda info: info.time)
    first = infos[0]
    grid = first.grid
    shape = (grid.ny, grid.nx)
    windowed = read_window is not None
    readers = {first.variable: _reader(read_window or read_data, windowed)}
    for name in first.extras:
        if read_extra is None:
            raise RadarFormatError(f"{first.format}: a reader with extras needs read_extra")
        readers[name] = functools.partial(_extra, read_extra, name)
    variables = {}
    for name, read in readers.items():
        stack = FrameStack(infos, read, shape, lock)
        if chunks is None:
            values: Any = stack[:]
        else:
            sizes = spatial_chunks(
                chunks, shape, first.storage_chunks, windowed or name != first.variable
            )
            from dask.base import tokenize

            files = [(info.path, str(info.time), os.stat(info.path).st_mtime_ns) for info in infos]
            token = tokenize(name, files, sizes)
            values = lazy_array(
                stack,
                sizes if (windowed or sizes == shape) else shape,
                f"xnowcast-read-{name}-{token}",
            )
            if values.chunksize[1:] != sizes:
                values = values.rechunk((1, *sizes))
        attrs = (
            {**VARIABLES[name], **first.var_attrs}
            if name == first.variable
            else dict(first.extras[name])
        )
        attrs["grid_mapping"] = "crs"
        variables[name] = (("time", "y", "x"), values, attrs)
    if first.extras:
        variables[first.variable][2]["ancillary_variables"] = " ".join(first.extras)

    times = np.array([info.time for info in infos], dtype="datetime64[ns]")
    ds = xr.Dataset(
        {**variables, "crs": _crs_variable(grid)},
        coords={
            "time": ("time", times, {"standard_name": "time", "axis": "T", "long_name": "time"}),
            "y": ("y", grid.y, grid.coordinate_attrs("Y")),
            "x": ("x", grid.x, grid.coordinate_attrs("X")),
        },
    )
    ds.time.encoding["units"] = "minutes since 1970-01-01 00:00:00"
    ds.time.encoding["calendar"] = "proleptic_gregorian"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    first_name, last_name = Path(infos[0].path).name, Path(infos[-1].path).name
    names = f"{first_name} ... {last_name}" if len(infos) > 1 else first_name
    ds.attrs = {
        "Conventions": "CF-1.10",
        **first.global_attrs,
        "history": (
            f"{now}: xnowcast {_version()} open_radar decoded {len(infos)} {first.format} "
            f"file(s): {names}"
        ),
    }
    # the grid mapping is a coordinate, so that ds["precipitation"] keeps it (CF 5.6)
    ds = ds.set_coords("crs")
    time_chunks = chunks.get("time") if isinstance(chunks, dict) else chunks
    if chunks is not None and time_chunks not in (None, "auto", {}, 1):
        ds = ds.chunk({"time": time_chunks})
    return ds


def _extra(
    read_extra: Callable[[FrameInfo, str, slice, slice], np.ndarray],
    name: str,
    info: FrameInfo,
    rows: slice,
    cols: slice,
) -> np.ndarray:
    return read_extra(info, name, rows, cols)
