"""Shared CF assembly: per-file headers and decoded frames -> one CF-compliant Dataset.

Every format module (``odim``, ``knmi``, ``fmi``, ``mch``) describes a file with
a :class:`FrameInfo` (its time, its :class:`Grid`, which variable it holds and
the attributes that go with it) and decodes its values with a ``read_data``
function that returns a float32 array in the output units (NaN where missing).
:func:`assemble` checks that the files agree and stacks them along ``time``,
eagerly or lazily (one dask chunk per file).
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xnowcast.errors import RadarFormatError, TimeAxisError

__all__ = ["VARIABLES", "FrameInfo", "Grid", "assemble", "rate_from_accumulation_attrs"]

#: CF attributes of the two variables the readers produce.
VARIABLES: dict[str, dict[str, str]] = {
    "precipitation": {
        "units": "mm h-1",
        "standard_name": "rainfall_rate",
        "long_name": "rain rate",
    },
    "reflectivity": {
        "units": "dBZ",
        "standard_name": "equivalent_reflectivity_factor",
        "long_name": "equivalent radar reflectivity factor",
    },
}


@dataclass(frozen=True)
class Grid:
    """A regular projected grid: cell centres ``x[i] = x0 + i * dx``, ``y[j] = y0 + j * dy``.

    ``y0`` is the northing of the file's first row and ``dy`` is signed: it is
    negative when rows run from north to south (the usual image order).
    Lengths are metres.  ``crs`` holds the CF grid-mapping attributes.
    """

    nx: int
    ny: int
    x0: float
    y0: float
    dx: float
    dy: float
    crs: dict[str, Any] = field(hash=False, compare=False)

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
            and self.crs.get("proj4_params") == other.crs.get("proj4_params")
        )


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


def assemble(
    infos: Sequence[FrameInfo],
    read_data: Callable[[FrameInfo], np.ndarray],
    *,
    chunks: Any = None,
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
        dask array with one chunk per file, rechunked with ``chunks`` unless
        it is an empty dict.

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

    if chunks is None:
        frames = [_checked(read_data(info), info, shape) for info in infos]
        values: Any = np.stack(frames) if frames else np.empty((0, *shape), np.float32)
    else:
        import dask
        import dask.array as dsa

        def _load(info: FrameInfo) -> np.ndarray:
            return _checked(read_data(info), info, shape)

        lazy = [
            dsa.from_delayed(
                dask.delayed(_load, pure=True)(info, dask_key_name=f"xnowcast-read-{info.path}"),
                shape=shape,
                dtype=np.float32,
            )
            for info in infos
        ]
        values = dsa.stack(lazy)

    var_attrs = {**VARIABLES[first.variable], **first.var_attrs, "grid_mapping": "crs"}
    times = np.array([info.time for info in infos], dtype="datetime64[ns]")
    ds = xr.Dataset(
        {first.variable: (("time", "y", "x"), values, var_attrs), "crs": _crs_variable(grid)},
        coords={
            "time": ("time", times, {"standard_name": "time", "axis": "T", "long_name": "time"}),
            "y": (
                "y",
                grid.y,
                {
                    "standard_name": "projection_y_coordinate",
                    "long_name": "y coordinate of projection (cell centre)",
                    "units": "m",
                    "axis": "Y",
                },
            ),
            "x": (
                "x",
                grid.x,
                {
                    "standard_name": "projection_x_coordinate",
                    "long_name": "x coordinate of projection (cell centre)",
                    "units": "m",
                    "axis": "X",
                },
            ),
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
    if chunks not in (None, {}):
        ds = ds.chunk(chunks)
    return ds


def _checked(values: np.ndarray, info: FrameInfo, shape: tuple[int, int]) -> np.ndarray:
    if values.shape != shape:
        raise RadarFormatError(
            f"{info.path}: decoded array has shape {values.shape}, its metadata says {shape}"
        )
    return values.astype(np.float32, copy=False)
